using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models;

/// <summary>GroupNorm and LayerNorm with affine weights explicitly set to ones and biases to zeros, as PyTorch
/// initialises them (TorchSharp does not guarantee it for every device/dtype).</summary>
public static class Norms
{
    public static GroupNorm GroupNorm(long numGroups, long numChannels, double eps, Device? device = null, ScalarType? dtype = null)
    {
        if (numGroups <= 0 || numChannels % numGroups != 0)
            throw new ArgumentException($"GroupNorm: {numChannels} channels cannot be split into {numGroups} groups");
        var norm = nn.GroupNorm(numGroups, numChannels, eps, affine: true, device: device, dtype: dtype);
        Reset(norm.weight, norm.bias);
        return norm;
    }

    public static LayerNorm LayerNorm(long dim, double eps, Device? device = null, ScalarType? dtype = null)
    {
        var norm = nn.LayerNorm(dim, eps, elementwise_affine: true, bias: true, device: device, dtype: dtype);
        Reset(norm.weight, norm.bias);
        return norm;
    }

    static void Reset(Tensor? weight, Tensor? bias)
    {
        using var _ = no_grad();
        if (weight is not null) nn.init.ones_(weight);
        if (bias is not null) nn.init.zeros_(bias);
    }
}
