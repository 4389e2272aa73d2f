using HyperSd.Diffusion.Models.Resnets;
using HyperSd.Diffusion.Models.Transformers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Unets;

/// <summary>diffusers' UNetMidBlock2DCrossAttn: resnet, then (Transformer2DModel → resnet) once.</summary>
public sealed class UNetMidBlock2DCrossAttn : UNetMidBlock
{
    readonly ModuleList<Transformer2DModel> attentions;
    readonly ModuleList<ResnetBlock2D> resnets;

    public UNetMidBlock2DCrossAttn(long inChannels, int transformerLayers, int numAttentionHeads, long crossAttentionDim,
        double outputScaleFactor, UNetBlockOptions o, int numLayers = 1) : base(nameof(UNetMidBlock2DCrossAttn))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, numLayers + 1).Select(_ => new ResnetBlock2D(inChannels, inChannels,
            o.TembChannels, o.ResnetGroups, o.ResnetEps, o.Dropout, o.ResnetActFn, outputScaleFactor, o.Device, o.DType)).ToArray());
        attentions = nn.ModuleList(Enumerable.Range(0, numLayers).Select(_ => new Transformer2DModel(numAttentionHeads,
            inChannels / numAttentionHeads, inChannels, transformerLayers, crossAttentionDim, o.ResnetGroups, o.UseLinearProjection,
            o.Dropout, o.Device, o.DType)).ToArray());
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates)
    {
        hiddenStates = resnets[0].call(hiddenStates, temb);
        for (int i = 0; i < attentions.Count; i++)
            hiddenStates = resnets[i + 1].call(attentions[i].call(hiddenStates, encoderHiddenStates), temb);
        return hiddenStates;
    }
}
