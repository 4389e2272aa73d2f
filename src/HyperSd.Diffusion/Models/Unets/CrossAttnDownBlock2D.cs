using HyperSd.Diffusion.Models.Resnets;
using HyperSd.Diffusion.Models.Transformers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Unets;

/// <summary>diffusers' CrossAttnDownBlock2D: (resnet → Transformer2DModel) per layer, then an optional downsampler.</summary>
public sealed class CrossAttnDownBlock2D : UNetDownBlock
{
    readonly ModuleList<Transformer2DModel> attentions;
    readonly ModuleList<ResnetBlock2D> resnets;
    readonly ModuleList<Downsample2D>? downsamplers;

    public CrossAttnDownBlock2D(long inChannels, long outChannels, int numLayers, int transformerLayers, int numAttentionHeads,
        long crossAttentionDim, bool addDownsample, int downsamplePadding, UNetBlockOptions o) : base(nameof(CrossAttnDownBlock2D))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, numLayers).Select(i => new ResnetBlock2D(i == 0 ? inChannels : outChannels,
            outChannels, o.TembChannels, o.ResnetGroups, o.ResnetEps, o.Dropout, o.ResnetActFn,
            device: o.Device, dtype: o.DType)).ToArray());
        attentions = nn.ModuleList(Enumerable.Range(0, numLayers).Select(_ => new Transformer2DModel(numAttentionHeads,
            outChannels / numAttentionHeads, outChannels, transformerLayers, crossAttentionDim, o.ResnetGroups, o.UseLinearProjection,
            o.Dropout, o.Device, o.DType)).ToArray());
        if (addDownsample) downsamplers = nn.ModuleList(new Downsample2D(outChannels, outChannels, downsamplePadding, o.Device, o.DType));
        RegisterComponents();
    }

    public override (Tensor Hidden, IReadOnlyList<Tensor> ResSamples) forward(
        Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates)
    {
        var outputs = new List<Tensor>();
        for (int i = 0; i < resnets.Count; i++)
        {
            using var resnetOutput = resnets[i].call(hiddenStates, temb);
            outputs.Add(hiddenStates = attentions[i].call(resnetOutput, encoderHiddenStates));
        }
        if (downsamplers is not null)
        {
            foreach (var downsampler in downsamplers) hiddenStates = downsampler.call(hiddenStates);
            outputs.Add(hiddenStates);
        }
        return (hiddenStates, outputs);
    }
}
