using HyperSd.Diffusion.Models.Resnets;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Unets;

/// <summary>diffusers' DownEncoderBlock2D (VAE encoder): resnets without time embedding, then an optional downsampler.</summary>
public sealed class DownEncoderBlock2D : nn.Module<Tensor, Tensor>
{
    readonly ModuleList<ResnetBlock2D> resnets;
    readonly ModuleList<Downsample2D>? downsamplers;

    public DownEncoderBlock2D(long inChannels, long outChannels, int numLayers, bool addDownsample, int downsamplePadding,
        double resnetEps, string resnetActFn, int resnetGroups, double dropout = 0.0, Device? device = null, ScalarType? dtype = null)
        : base(nameof(DownEncoderBlock2D))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, numLayers).Select(i => new ResnetBlock2D(i == 0 ? inChannels : outChannels,
            outChannels, null, resnetGroups, resnetEps, dropout, resnetActFn, device: device, dtype: dtype)).ToArray());
        if (addDownsample) downsamplers = nn.ModuleList(new Downsample2D(outChannels, outChannels, downsamplePadding, device, dtype));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        foreach (var resnet in resnets) hiddenStates = resnet.call(hiddenStates, null);
        if (downsamplers is not null)
            foreach (var downsampler in downsamplers) hiddenStates = downsampler.call(hiddenStates);
        return hiddenStates;
    }
}
