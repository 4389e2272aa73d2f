using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>What every sampler here offers, the shape of diffusers' schedulers: set the inference timesteps, scale
/// the model input, and step from x_t to the previous sample.</summary>
public interface IScheduler
{
    SchedulerConfig Config { get; }

    /// <summary>The inference timesteps, highest first (int64; float32 for Euler), on the device given to
    /// <see cref="SetTimesteps"/>. Before that call: every training timestep.</summary>
    Tensor Timesteps { get; }

    /// <summary>The number of inference steps set, null before <see cref="SetTimesteps"/>.</summary>
    int? NumInferenceSteps { get; }

    /// <summary>The standard deviation of the initial noise: latents start as randn · InitNoiseSigma.</summary>
    double InitNoiseSigma { get; }

    void SetTimesteps(int numInferenceSteps, Device? device = null);

    /// <summary>The sample as the model should see it at <paramref name="timestep"/> (unchanged except for Euler).</summary>
    Tensor ScaleModelInput(Tensor sample, double timestep);

    /// <summary>One sampling step at <paramref name="timestep"/> (a value of <see cref="Timesteps"/>). A stochastic step
    /// takes its standard normal noise from <paramref name="noise"/> when given (to replay recorded draws), else
    /// draws it from <paramref name="generator"/> (the default generator when null), or sample i from
    /// <paramref name="generators"/>[i] (per-image seeds, as diffusers does with a list of generators).</summary>
    SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, Generator? generator = null, Tensor? noise = null,
        IReadOnlyList<Generator>? generators = null);

    /// <summary>Noises clean samples to <paramref name="timesteps"/> (one per sample), as img2img starts do.</summary>
    Tensor AddNoise(Tensor originalSamples, Tensor noise, Tensor timesteps);
}

/// <summary>A step's result with diffusers' names: <c>prev_sample</c>, and the side outputs of the scheduler that made it.</summary>
/// <param name="PrevSample">The sample after the step, the next model input.</param>
/// <param name="PredOriginalSample">x̂0 predicted from the model output at this step (every scheduler here).</param>
public sealed record SchedulerOutput(Tensor PrevSample, Tensor PredOriginalSample)
{
    /// <summary>LCM's boundary-condition output c_skip·x_t + c_out·x̂0.</summary>
    public Tensor? Denoised { get; init; }

    /// <summary>TCD's predicted noised sample x_s.</summary>
    public Tensor? PredNoisedSample { get; init; }

    /// <summary>The standard normal noise this step added (given or drawn), null when it added none.</summary>
    public Tensor? Noise { get; init; }
}
