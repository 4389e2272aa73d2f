using HyperSd.Diffusion.Models.Resnets;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Unets;

/// <summary>diffusers' DownBlock2D: resnets, then an optional stride-2 downsampler.</summary>
public sealed class DownBlock2D : UNetDownBlock
{
    readonly ModuleList<ResnetBlock2D> resnets;
    readonly ModuleList<Downsample2D>? downsamplers;

    public DownBlock2D(long inChannels, long outChannels, int numLayers, bool addDownsample, int downsamplePadding, UNetBlockOptions o)
        : base(nameof(DownBlock2D))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, numLayers).Select(i => new ResnetBlock2D(i == 0 ? inChannels : outChannels,
            outChannels, o.TembChannels, o.ResnetGroups, o.ResnetEps, o.Dropout, o.ResnetActFn,
            device: o.Device, dtype: o.DType)).ToArray());
        if (addDownsample) downsamplers = nn.ModuleList(new Downsample2D(outChannels, outChannels, downsamplePadding, o.Device, o.DType));
        RegisterComponents();
    }

    public override (Tensor Hidden, IReadOnlyList<Tensor> ResSamples) forward(
        Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates)
    {
        var outputs = new List<Tensor>();
        foreach (var resnet in resnets) outputs.Add(hiddenStates = resnet.call(hiddenStates, temb));
        if (downsamplers is not null)
        {
            foreach (var downsampler in downsamplers) hiddenStates = downsampler.call(hiddenStates);
            outputs.Add(hiddenStates);
        }
        return (hiddenStates, outputs);
    }
}
