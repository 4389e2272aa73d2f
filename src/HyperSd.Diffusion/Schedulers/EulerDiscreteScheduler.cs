using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>diffusers' EulerDiscreteScheduler (Algorithm 2 of Karras et al., arXiv 2206.00364) in σ = √((1 − ᾱ)/ᾱ):
/// sigmas interpolated linearly at the inference timesteps, then a final 0 (or σ_min); the model sees
/// x / √(σ² + 1). s_churn &gt; 0 adds noise before a step. Karras / exponential / beta sigmas are not ported.</summary>
public sealed class EulerDiscreteScheduler : IScheduler
{
    static readonly IReadOnlyList<string> EulerPredictionTypes = ["epsilon", "v_prediction", "sample", "original_sample"];

    readonly float[] trainSigmas;  // σ of every training timestep, ascending in t

    public EulerDiscreteScheduler(SchedulerConfig config)
    {
        config.Require("prediction_type", config.PredictionType, EulerPredictionTypes);
        config.Require("timestep_spacing", config.TimestepSpacing, SchedulerConfig.TimestepSpacings);
        config.Require("interpolation_type", config.InterpolationType, ["linear"]);
        config.Require("timestep_type", config.TimestepType, ["discrete", "continuous"]);
        config.Require("final_sigmas_type", config.FinalSigmasType, ["zero", "sigma_min"]);
        config.Refuse("use_karras_sigmas", config.UseKarrasSigmas, "only the linear sigmas of the training schedule are ported");
        config.Refuse("use_exponential_sigmas", config.UseExponentialSigmas, "only the linear sigmas of the training schedule are ported");
        config.Refuse("use_beta_sigmas", config.UseBetaSigmas, "only the linear sigmas of the training schedule are ported");
        Config = config;
        using var scope = NewDisposeScope();
        var alphasCumprod = NoiseSchedule.AlphasCumprod(NoiseSchedule.Betas(config));
        // keeps σ_T finite under zero terminal SNR, as diffusers does
        if (config.RescaleBetasZeroSnr) alphasCumprod[config.NumTrainTimesteps - 1].fill_(MathF.Pow(2, -24));
        AlphasCumprod = alphasCumprod.DetachFromDisposeScope();
        trainSigmas = ((1 - alphasCumprod) / alphasCumprod).sqrt().data<float>().ToArray();
        var descending = trainSigmas.Reverse().ToArray();
        Set(Enumerable.Range(0, descending.Length).Reverse().Select(t => (float)t).ToArray(), [.. descending, 0f], null);
        NumInferenceSteps = null;
    }

    public SchedulerConfig Config { get; }
    public Tensor AlphasCumprod { get; }
    public Tensor Timesteps { get; private set; } = null!;

    /// <summary>σ of each inference timestep and a final 0 (or σ_min): [num_inference_steps + 1], float32.</summary>
    public Tensor Sigmas { get; private set; } = null!;

    public int? NumInferenceSteps { get; private set; }
    public int? StepIndex { get; private set; }

    /// <summary>Karras' churn: s_churn &gt; 0 raises σ to σ·(1 + γ) with fresh noise for σ in [s_tmin, s_tmax].</summary>
    public double SChurn { get; set; }
    public double STmin { get; set; }
    public double STmax { get; set; } = double.PositiveInfinity;
    public double SNoise { get; set; } = 1.0;

    float[] sigmaValues = [];

    /// <summary>σ_max for linspace / trailing spacing, else √(σ_max² + 1).</summary>
    public double InitNoiseSigma
    {
        get
        {
            float max = sigmaValues.Max();
            return Config.TimestepSpacing is "linspace" or "trailing" ? max : MathF.Sqrt(max * max + 1);
        }
    }

    public void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        var timesteps = TimestepSpacing.Compute(Config, numInferenceSteps);
        var sigmas = timesteps.Select(t => (float)Interp(t)).ToList();
        sigmas.Add(Config.FinalSigmasType == "zero" ? 0f : trainSigmas[0]);
        Set(timesteps.Select(t => (float)t).ToArray(), sigmas.ToArray(), device);
        NumInferenceSteps = numInferenceSteps;
    }

    void Set(float[] timesteps, float[] sigmas, Device? device)
    {
        sigmaValues = sigmas;
        Sigmas = tensor(sigmas, float32, device).DetachFromDisposeScope();
        // continuous v-prediction models take 0.25·log σ as their timestep
        var modelTimesteps = Config is { TimestepType: "continuous", PredictionType: "v_prediction" }
            ? sigmas[..timesteps.Length].Select(s => 0.25f * MathF.Log(s)).ToArray()
            : timesteps;
        Timesteps = tensor(modelTimesteps, float32, device).DetachFromDisposeScope();
        StepIndex = null;
    }

    /// <summary>numpy.interp of the training sigmas at a (fractional) timestep, in double.</summary>
    double Interp(double t)
    {
        int last = trainSigmas.Length - 1;
        if (t <= 0) return trainSigmas[0];
        if (t >= last) return trainSigmas[last];
        int j = (int)Math.Floor(t);
        if (t == j) return trainSigmas[j];
        double slope = (double)trainSigmas[j + 1] - trainSigmas[j];  // over a unit step
        return slope * (t - j) + trainSigmas[j];
    }

    int BeginStep(double timestep) => StepIndex ??= TimestepIndex.Of(Timesteps, timestep);

    /// <summary>x / √(σ² + 1), so the model sees unit variance.</summary>
    public Tensor ScaleModelInput(Tensor sample, double timestep)
    {
        float sigma = sigmaValues[BeginStep(timestep)];
        return sample / MathF.Sqrt(sigma * sigma + 1);
    }

    public SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, Generator? generator = null, Tensor? noise = null,
        IReadOnlyList<Generator>? generators = null)
    {
        if (NumInferenceSteps is null) throw new InvalidOperationException("call SetTimesteps before Step");
        int index = BeginStep(timestep);
        if (index + 1 >= sigmaValues.Length)
            throw new InvalidOperationException("every step of the schedule has run; call SetTimesteps again");
        float sigma = sigmaValues[index];
        double gamma = STmin <= sigma && sigma <= STmax ? Math.Min(SChurn / (sigmaValues.Length - 1), Math.Sqrt(2) - 1) : 0.0;
        float sigmaHat = sigma * (float)(gamma + 1);
        var drawn = gamma > 0 ? StepNoise.Take(modelOutput, generator, noise, generators) : null;

        using var scope = NewDisposeScope();
        var x = sample.to(float32);
        if (drawn is not null) x = x + drawn * SNoise * MathF.Sqrt(sigmaHat * sigmaHat - sigma * sigma);
        var x0 = Config.PredictionType switch
        {
            "epsilon" => x - sigmaHat * modelOutput,
            "v_prediction" => modelOutput * (-sigma / MathF.Sqrt(sigma * sigma + 1)) + x / (sigma * sigma + 1),
            _ => modelOutput.alias(),
        };
        var derivative = (x - x0) / sigmaHat;
        float dt = sigmaValues[index + 1] - sigmaHat;
        var prevSample = (x + derivative * dt).to(modelOutput.dtype);
        StepIndex = index + 1;
        return new(prevSample.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope()) { Noise = drawn };
    }

    /// <summary>x0 + σ·noise at each sample's timestep (values of <see cref="Timesteps"/>).</summary>
    public Tensor AddNoise(Tensor originalSamples, Tensor noise, Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        var values = timesteps.to(float64).cpu().data<double>().ToArray();
        var sigmas = values.Select(t => sigmaValues[TimestepIndex.Of(Timesteps, t)]).ToArray();
        var sigma = tensor(sigmas, originalSamples.dtype, originalSamples.device)
            .reshape([-1, .. Enumerable.Repeat(1L, Math.Max(0, (int)originalSamples.ndim - 1))]);
        return (originalSamples + noise * sigma).MoveToOuterDisposeScope();
    }
}
