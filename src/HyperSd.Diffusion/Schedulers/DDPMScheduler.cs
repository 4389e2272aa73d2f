using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>The discrete forward process q(x_t | x_0) that training uses (diffusers' DDPMScheduler as training scripts
/// use it: alphas_cumprod, add_noise, get_velocity), and the x̂0 / ε̂ / DDIM-jump algebra that the DDIM, TCD and LCM
/// samplers and the distillation code share. DDPM's ancestral sampler itself is not ported.
/// <para>Timestep tensors hold one timestep per sample (or one for all); a negative timestep means "the data", whose
/// ᾱ is <see cref="FinalAlphaCumprod"/>.</para></summary>
public class DDPMScheduler
{
    public SchedulerConfig Config { get; }
    public int NumTrainTimesteps => Config.NumTrainTimesteps;

    /// <summary>β_t, α_t = 1 − β_t and ᾱ_t = ∏α (float32, CPU, [num_train_timesteps]), as diffusers computes them.</summary>
    public Tensor Betas { get; }
    public Tensor Alphas { get; }
    public Tensor AlphasCumprod { get; }

    /// <summary>ᾱ after the last step: 1 with <c>set_alpha_to_one</c>, else ᾱ_0 (0-d float32).</summary>
    public Tensor FinalAlphaCumprod { get; }

    public double InitNoiseSigma => 1.0;

    public DDPMScheduler(SchedulerConfig config)
    {
        config.Require("prediction_type", config.PredictionType, SchedulerConfig.PredictionTypes);
        config.Require("timestep_spacing", config.TimestepSpacing, SchedulerConfig.TimestepSpacings);
        Config = config;
        using var scope = NewDisposeScope();
        // the schedule lives as long as the scheduler, like a module's parameters
        Betas = NoiseSchedule.Betas(config).DetachFromDisposeScope();
        Alphas = (1.0 - Betas).DetachFromDisposeScope();
        AlphasCumprod = NoiseSchedule.AlphasCumprod(Betas).DetachFromDisposeScope();
        FinalAlphaCumprod = (config.SetAlphaToOne ? tensor(1f) : AlphasCumprod[0].clone()).DetachFromDisposeScope();
    }

    /// <summary>The forward process of a diffusers scheduler folder, whatever class its config names (as training
    /// scripts do with <c>DDPMScheduler.from_pretrained(model, subfolder="scheduler")</c>).</summary>
    public static DDPMScheduler FromPretrained(string path) => new(SchedulerConfig.Read(path, nameof(DDPMScheduler)));

    /// <summary>ᾱ of each timestep ([N], float32, on <paramref name="device"/>); final_alpha_cumprod for t &lt; 0.</summary>
    public Tensor AlphaProd(Tensor timesteps, Device device)
    {
        using var scope = NewDisposeScope();
        var t = timesteps.to(int64, device).flatten();
        if (t.numel() > 0 && t.max().item<long>() >= NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(timesteps),
                $"timestep {t.max().item<long>()} is past the last training timestep {NumTrainTimesteps - 1}");
        var picked = AlphasCumprod.to(device).index_select(0, t.clamp_min(0));
        return where(t >= 0, picked, FinalAlphaCumprod.to(device)).MoveToOuterDisposeScope();
    }

    /// <summary>q(x_t | x_0): √ᾱ_t·x0 + √(1 − ᾱ_t)·noise.</summary>
    public Tensor AddNoise(Tensor originalSamples, Tensor noise, Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        var a = PerSample(AlphaProd(timesteps, originalSamples.device), originalSamples);
        return (a.sqrt() * originalSamples + (1 - a).sqrt() * noise).MoveToOuterDisposeScope();
    }

    /// <summary>The v-prediction target √ᾱ_t·noise − √(1 − ᾱ_t)·sample.</summary>
    public Tensor GetVelocity(Tensor sample, Tensor noise, Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        var a = PerSample(AlphaProd(timesteps, sample.device), sample);
        return (a.sqrt() * noise - (1 - a).sqrt() * sample).MoveToOuterDisposeScope();
    }

    /// <summary>x̂0 and ε̂ from a model output at x_t for this config's prediction_type (epsilon, sample or v_prediction).</summary>
    public (Tensor PredOriginalSample, Tensor PredEpsilon) ConvertModelOutput(Tensor modelOutput, Tensor timesteps, Tensor sample)
    {
        using var scope = NewDisposeScope();
        var a = PerSample(AlphaProd(timesteps, sample.device), sample);
        var b = 1 - a;
        var (x0, eps) = Config.PredictionType switch
        {
            "epsilon" => ((sample - b.sqrt() * modelOutput) / a.sqrt(), modelOutput.alias()),
            "sample" => (modelOutput.alias(), (sample - a.sqrt() * modelOutput) / b.sqrt()),
            _ => (a.sqrt() * sample - b.sqrt() * modelOutput, a.sqrt() * modelOutput + b.sqrt() * sample),
        };
        return (x0.MoveToOuterDisposeScope(), eps.MoveToOuterDisposeScope());
    }

    /// <inheritdoc cref="ConvertModelOutput(Tensor, Tensor, Tensor)"/>
    public (Tensor PredOriginalSample, Tensor PredEpsilon) ConvertModelOutput(Tensor modelOutput, long timestep, Tensor sample)
    {
        using var t = tensor(timestep);
        return ConvertModelOutput(modelOutput, t, sample);
    }

    /// <summary>The deterministic DDIM jump to timestep s: √ᾱ_s·x̂0 + √(1 − ᾱ_s)·ε̂, for any s below the current
    /// timestep; s &lt; 0 jumps to the data with final_alpha_cumprod (which is ᾱ_0 when set_alpha_to_one is false,
    /// so s = 0 and s = −1 then agree).</summary>
    public Tensor DdimJump(Tensor predOriginalSample, Tensor predEpsilon, Tensor prevTimesteps)
    {
        using var scope = NewDisposeScope();
        var a = PerSample(AlphaProd(prevTimesteps, predOriginalSample.device), predOriginalSample);
        return Jump(predOriginalSample, predEpsilon, a, zeros(1, a.dtype, a.device)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc cref="DdimJump(Tensor, Tensor, Tensor)"/>
    public Tensor DdimJump(Tensor predOriginalSample, Tensor predEpsilon, long prevTimestep)
    {
        using var t = tensor(prevTimestep);
        return DdimJump(predOriginalSample, predEpsilon, t);
    }

    /// <summary>DDIM's update √ᾱ_prev·x̂0 + √(1 − ᾱ_prev − σ²)·ε̂ (formula 12 of arXiv 2010.02502).</summary>
    private protected static Tensor Jump(Tensor x0, Tensor eps, Tensor alphaProdPrev, Tensor stdDev) =>
        alphaProdPrev.sqrt() * x0 + (1 - alphaProdPrev - stdDev.pow(2)).sqrt() * eps;

    /// <summary>DDIM's σ_t² = (1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev) (formula 16).</summary>
    private protected Tensor GetVariance(Tensor timestep, Tensor prevTimestep, Device device)
    {
        var a = AlphaProd(timestep, device);
        var aPrev = AlphaProd(prevTimestep, device);
        return (1 - aPrev) / (1 - a) * (1 - a / aPrev);
    }

    /// <summary>clip_sample's clamp or dynamic thresholding of x̂0 (arXiv 2205.11487), as the config asks.</summary>
    private protected Tensor ClipOrThreshold(Tensor x0)
    {
        if (Config.Thresholding) return ThresholdSample(x0);
        return Config.ClipSample ? x0.clamp(-Config.ClipSampleRange, Config.ClipSampleRange) : x0;
    }

    /// <summary>Dynamic thresholding: s = the dynamic_thresholding_ratio quantile of |x̂0| per sample, clamped to
    /// [1, sample_max_value]; x̂0 is clamped to [−s, s] and divided by s.</summary>
    public Tensor ThresholdSample(Tensor sample)
    {
        using var scope = NewDisposeScope();
        var dtype = sample.dtype;
        var flat = sample.reshape(sample.shape[0], -1);
        if (dtype != float32 && dtype != float64) flat = flat.to(float32);
        var s = flat.abs().quantile(tensor(Config.DynamicThresholdingRatio, flat.dtype, flat.device), 1)
            .clamp(1, Config.SampleMaxValue).unsqueeze(1);
        return (flat.clamp(-s, s) / s).reshape(sample.shape).to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>[N] coefficients shaped to broadcast over samples ([N, 1, 1, …]) in the sample's dtype.</summary>
    private protected static Tensor PerSample(Tensor coefficients, Tensor like) =>
        coefficients.reshape([-1, .. Enumerable.Repeat(1L, Math.Max(0, (int)like.ndim - 1))]).to(like.dtype);
}
