using HyperSd.Diffusion.Models.Resnets;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Unets;

/// <summary>diffusers' UpBlock2D: per layer, concatenate the next skip connection (last first) and run a resnet;
/// then an optional upsampler.</summary>
public sealed class UpBlock2D : UNetUpBlock
{
    readonly ModuleList<ResnetBlock2D> resnets;
    readonly ModuleList<Upsample2D>? upsamplers;

    public UpBlock2D(long inChannels, long prevOutputChannel, long outChannels, int numLayers, bool addUpsample, UNetBlockOptions o)
        : base(nameof(UpBlock2D))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, numLayers).Select(i => new ResnetBlock2D(
            (i == 0 ? prevOutputChannel : outChannels) + (i == numLayers - 1 ? inChannels : outChannels),
            outChannels, o.TembChannels, o.ResnetGroups, o.ResnetEps, o.Dropout, o.ResnetActFn,
            device: o.Device, dtype: o.DType)).ToArray());
        if (addUpsample) upsamplers = nn.ModuleList(new Upsample2D(outChannels, outChannels, o.Device, o.DType));
        RegisterComponents();
    }

    public override int ResnetCount => resnets.Count;

    public override Tensor forward(Tensor hiddenStates, IReadOnlyList<Tensor> resHiddenStates, Tensor? temb, Tensor? encoderHiddenStates,
        long[]? upsampleSize)
    {
        for (int i = 0; i < resnets.Count; i++)
        {
            using var joined = torch.cat([hiddenStates, resHiddenStates[^(i + 1)]], 1);
            hiddenStates = resnets[i].call(joined, temb);
        }
        if (upsamplers is not null)
            foreach (var upsampler in upsamplers) hiddenStates = upsampler.call(hiddenStates, upsampleSize);
        return hiddenStates;
    }
}
