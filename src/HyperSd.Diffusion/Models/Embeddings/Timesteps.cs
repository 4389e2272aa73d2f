using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Embeddings;

/// <summary>diffusers' Timesteps (get_timestep_embedding): sinusoidal embeddings of (possibly fractional)
/// timesteps, always float32. No weights.</summary>
public sealed class Timesteps : nn.Module<Tensor, Tensor>
{
    readonly int numChannels;
    readonly bool flipSinToCos;
    readonly double downscaleFreqShift;
    const double MaxPeriod = 10000;

    public Timesteps(int numChannels, bool flipSinToCos, double downscaleFreqShift) : base(nameof(Timesteps))
    {
        this.numChannels = numChannels;
        this.flipSinToCos = flipSinToCos;
        this.downscaleFreqShift = downscaleFreqShift;
        RegisterComponents();
    }

    /// <param name="timesteps">1-D: one timestep per batch element.</param>
    public override Tensor forward(Tensor timesteps)
    {
        if (timesteps.dim() != 1)
            throw new ArgumentException($"Timesteps: expected a 1-D tensor, got shape [{string.Join(", ", timesteps.shape)}]");
        using var scope = NewDisposeScope();
        int half = numChannels / 2;
        var exponent = arange(0, half, dtype: float32, device: timesteps.device) * -Math.Log(MaxPeriod) / (half - downscaleFreqShift);
        var emb = timesteps.unsqueeze(1).to(float32) * exponent.exp().unsqueeze(0);
        emb = cat([emb.sin(), emb.cos()], -1);
        if (flipSinToCos) emb = cat([emb[.., half..], emb[.., ..half]], -1);
        if (numChannels % 2 == 1) emb = nn.functional.pad(emb, [0, 1, 0, 0]);
        return emb.MoveToOuterDisposeScope();
    }
}
