using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Resnets;

/// <summary>diffusers' Downsample2D with a conv (stride 2). With padding 0 (the VAE encoder) the input is first
/// padded by one pixel on the right and bottom only, as diffusers does.</summary>
public sealed class Downsample2D : nn.Module<Tensor, Tensor>
{
    readonly Conv2d conv;
    readonly int padding;

    public Downsample2D(long channels, long outChannels, int padding = 1, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Downsample2D))
    {
        this.padding = padding;
        conv = nn.Conv2d(channels, outChannels, 3, stride: 2, padding: padding, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        if (padding != 0) return conv.call(hiddenStates);
        using var padded = nn.functional.pad(hiddenStates, [0, 1, 0, 1]);
        return conv.call(padded);
    }
}
