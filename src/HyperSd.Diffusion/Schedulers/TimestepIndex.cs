using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>diffusers' <c>index_for_timestep</c>: where a timestep sits in the inference schedule.</summary>
internal static class TimestepIndex
{
    /// <summary>The index of <paramref name="timestep"/> in <paramref name="timesteps"/>; the second match when it repeats,
    /// so that a schedule entered midway (img2img) does not skip a sigma.</summary>
    public static int Of(Tensor timesteps, double timestep)
    {
        using var values = timesteps.to(float64).cpu();
        var all = values.data<double>().ToArray();
        var matches = Enumerable.Range(0, all.Length).Where(i => all[i] == timestep).Take(2).ToList();
        if (matches.Count == 0)
            throw new ArgumentException($"timestep {timestep} is not in the schedule [{string.Join(", ", all)}]", nameof(timestep));
        return matches[^1];
    }

    /// <summary>A timestep that indexes alphas_cumprod must be a whole number.</summary>
    public static long Integral(double timestep) =>
        timestep == Math.Floor(timestep) && Math.Abs(timestep) < long.MaxValue
            ? (long)timestep
            : throw new ArgumentException(
                $"timestep {timestep} is not a whole number; this scheduler's timesteps index alphas_cumprod", nameof(timestep));
}
