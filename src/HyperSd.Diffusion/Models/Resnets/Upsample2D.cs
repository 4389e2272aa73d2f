using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Resnets;

/// <summary>diffusers' Upsample2D with a conv: nearest-neighbour ×2 (or to an explicit size), then a 3×3 conv.</summary>
public sealed class Upsample2D : nn.Module<Tensor, long[]?, Tensor>
{
    readonly Conv2d conv;

    public Upsample2D(long channels, long outChannels, Device? device = null, ScalarType? dtype = null) : base(nameof(Upsample2D))
    {
        conv = nn.Conv2d(channels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="outputSize">Height and width to upsample to; null doubles them. The UNet passes the skip
    /// connection's size when the input is not a multiple of its total downsampling factor.</param>
    public override Tensor forward(Tensor hiddenStates, long[]? outputSize)
    {
        using var upsampled = outputSize is null
            ? nn.functional.interpolate(hiddenStates, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest)
            : nn.functional.interpolate(hiddenStates, size: outputSize, mode: InterpolationMode.Nearest);
        return conv.call(upsampled);
    }
}
