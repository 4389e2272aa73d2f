using HyperSd.Diffusion.Models.Resnets;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Unets;

/// <summary>diffusers' UpDecoderBlock2D (VAE decoder): resnets without time embedding or skips, then an optional upsampler.</summary>
public sealed class UpDecoderBlock2D : nn.Module<Tensor, Tensor>
{
    readonly ModuleList<ResnetBlock2D> resnets;
    readonly ModuleList<Upsample2D>? upsamplers;

    public UpDecoderBlock2D(long inChannels, long outChannels, int numLayers, bool addUpsample, double resnetEps, string resnetActFn,
        int resnetGroups, double dropout = 0.0, Device? device = null, ScalarType? dtype = null) : base(nameof(UpDecoderBlock2D))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, numLayers).Select(i => new ResnetBlock2D(i == 0 ? inChannels : outChannels,
            outChannels, null, resnetGroups, resnetEps, dropout, resnetActFn, device: device, dtype: dtype)).ToArray());
        if (addUpsample) upsamplers = nn.ModuleList(new Upsample2D(outChannels, outChannels, device, dtype));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        foreach (var resnet in resnets) hiddenStates = resnet.call(hiddenStates, null);
        if (upsamplers is not null)
            foreach (var upsampler in upsamplers) hiddenStates = upsampler.call(hiddenStates, null);
        return hiddenStates;
    }
}
