using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>diffusers' LCMScheduler (multistep Latent Consistency Model sampling, arXiv 2310.04378): the consistency
/// function's boundary condition c_skip·x_t + c_out·x̂0, then fresh noise to the next timestep (not after the last).</summary>
public sealed class LCMScheduler(SchedulerConfig config) : ConsistencyScheduler(config)
{
    const float SigmaData = 0.5f;

    /// <summary>c_skip = σ²/((t·s)² + σ²) and c_out = t·s/√((t·s)² + σ²), σ = 0.5, s = timestep_scaling (float32).</summary>
    public (float CSkip, float COut) GetScalingsForBoundaryConditionDiscrete(long timestep)
    {
        float scaled = timestep * (float)Config.TimestepScaling;
        float denominator = scaled * scaled + SigmaData * SigmaData;
        return (SigmaData * SigmaData / denominator, scaled / MathF.Sqrt(denominator));
    }

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, Generator? generator = null,
        Tensor? noise = null, IReadOnlyList<Generator>? generators = null)
    {
        var (steps, index) = BeginStep(timestep);
        long t = TimestepIndex.Integral(timestep);
        long prev = index + 1 < TimestepValues.Length ? TimestepValues[index + 1] : t;
        var drawn = index != steps - 1 ? StepNoise.Take(modelOutput, generator, noise, generators) : null;

        using var scope = NewDisposeScope();
        var (cSkip, cOut) = GetScalingsForBoundaryConditionDiscrete(t);
        var x0 = ClipOrThreshold(ConvertModelOutput(modelOutput, t, sample).PredOriginalSample);
        var denoised = cOut * x0 + cSkip * sample;
        var prevSample = drawn is null ? denoised.alias() : DdimJump(denoised, drawn, prev);
        StepIndex = index + 1;
        return new(prevSample.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope())
        {
            Denoised = denoised.MoveToOuterDisposeScope(), Noise = drawn,
        };
    }
}
