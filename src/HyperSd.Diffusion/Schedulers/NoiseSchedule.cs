using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>The betas and ᾱ (alphas_cumprod) of the discrete forward process, computed as every diffusers scheduler
/// does: float32 torch ops (linspace, cumprod), so the values agree bit for bit.</summary>
public static class NoiseSchedule
{
    /// <summary>betas (float32, [num_train_timesteps]) from <c>trained_betas</c> or <c>beta_schedule</c>, rescaled to
    /// zero terminal SNR when <c>rescale_betas_zero_snr</c> is set.</summary>
    public static Tensor Betas(SchedulerConfig config)
    {
        if (config.NumTrainTimesteps < 1)
            throw new InvalidDataException($"{config.Source}: num_train_timesteps must be at least 1, got {config.NumTrainTimesteps}");
        using var scope = NewDisposeScope();
        Tensor betas;
        if (config.TrainedBetas is { } trained)
        {
            if (trained.Length != config.NumTrainTimesteps)
                throw new InvalidDataException(
                    $"{config.Source}: trained_betas has {trained.Length} values but num_train_timesteps is {config.NumTrainTimesteps}");
            betas = tensor(trained, float32);
        }
        else
        {
            config.Require("beta_schedule", config.BetaSchedule, SchedulerConfig.BetaSchedules);
            int n = config.NumTrainTimesteps;
            betas = config.BetaSchedule switch
            {
                "linear" => linspace(config.BetaStart, config.BetaEnd, n, float32),
                // Python's beta ** 0.5 is C pow, which Math.Pow also calls
                "scaled_linear" => linspace(Math.Pow(config.BetaStart, 0.5), Math.Pow(config.BetaEnd, 0.5), n, float32).pow(2),
                _ => tensor(CosineBetas(n), float32),
            };
        }
        if (config.RescaleBetasZeroSnr) betas = RescaleZeroTerminalSnr(betas);
        return betas.MoveToOuterDisposeScope();
    }

    /// <summary>ᾱ_t = ∏(1 − β) (float32).</summary>
    public static Tensor AlphasCumprod(Tensor betas)
    {
        using var scope = NewDisposeScope();
        return cumprod(1.0 - betas, 0).MoveToOuterDisposeScope();
    }

    /// <summary>The "squaredcos_cap_v2" (Glide cosine) schedule: β_i = min(1 − ᾱ(t_{i+1})/ᾱ(t_i), 0.999), in double.</summary>
    static double[] CosineBetas(int n)
    {
        static double AlphaBar(double t) { var c = Math.Cos((t + 0.008) / 1.008 * Math.PI / 2); return c * c; }
        return Enumerable.Range(0, n).Select(i => Math.Min(1 - AlphaBar((i + 1) / (double)n) / AlphaBar(i / (double)n), 0.999)).ToArray();
    }

    /// <summary>Rescales betas so that the last timestep has zero SNR (arXiv 2305.08891, Algorithm 1).</summary>
    public static Tensor RescaleZeroTerminalSnr(Tensor betas)
    {
        using var scope = NewDisposeScope();
        long n = betas.shape[0];
        var alphasBarSqrt = cumprod(1.0 - betas, 0).sqrt();
        var first = alphasBarSqrt[0].clone();
        var last = alphasBarSqrt[n - 1].clone();
        alphasBarSqrt = (alphasBarSqrt - last) * (first / (first - last));
        var alphasBar = alphasBarSqrt.pow(2);
        var alphas = cat([alphasBar.narrow(0, 0, 1), alphasBar.narrow(0, 1, n - 1) / alphasBar.narrow(0, 0, n - 1)]);
        return (1 - alphas).MoveToOuterDisposeScope();
    }
}
