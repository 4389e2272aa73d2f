using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Autoencoders;

/// <summary>diffusers' DiagonalGaussianDistribution: the VAE posterior, from moments = concat(mean, logvar) on
/// dim 1; logvar is clamped to [−30, 20] as diffusers does. Owns its tensors.</summary>
public sealed class DiagonalGaussianDistribution : IDisposable
{
    public Tensor Mean { get; }
    public Tensor LogVar { get; }
    public Tensor Std { get; }
    public Tensor Var { get; }

    public DiagonalGaussianDistribution(Tensor moments)
    {
        var halves = moments.chunk(2, 1);
        Mean = halves[0];
        using (halves[1]) LogVar = halves[1].clamp(-30.0, 20.0);
        Std = (LogVar * 0.5).exp_();
        Var = LogVar.exp();
    }

    /// <summary>mean + std · ε with ε drawn from <paramref name="generator"/> (or the global one).</summary>
    public Tensor Sample(Generator? generator = null)
    {
        using var noise = randn(Mean.shape, Mean.dtype, Mean.device, generator: generator);
        return Sample(noise);
    }

    /// <summary>mean + std · <paramref name="noise"/>, for reproducing a reference draw.</summary>
    public Tensor Sample(Tensor noise)
    {
        if (!noise.shape.SequenceEqual(Mean.shape))
            throw new ArgumentException(
                $"DiagonalGaussianDistribution: noise shape [{string.Join(", ", noise.shape)}] " +
                $"differs from the mean's [{string.Join(", ", Mean.shape)}]");
        using var scaled = Std * noise;
        return Mean + scaled;
    }

    /// <summary>The distribution's mode (its mean), diffusers' <c>mode()</c>.</summary>
    public Tensor Mode() => Mean.alias();

    public void Dispose()
    {
        Mean.Dispose(); LogVar.Dispose(); Std.Dispose(); Var.Dispose();
    }
}
