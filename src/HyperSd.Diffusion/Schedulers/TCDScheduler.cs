using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>diffusers' TCDScheduler: Strategic Stochastic Sampling of Trajectory Consistency Distillation
/// (arXiv 2402.19159). Each step jumps to x_s with s = ⌊(1 − γ)·t_prev⌋ and, except on the last step, noises x_s
/// forward to t_prev. γ (<see cref="Eta"/>) = 0 is deterministic; 1 is LCM-like. The unified Hyper-SD LoRA's sampler.</summary>
public sealed class TCDScheduler(SchedulerConfig config) : ConsistencyScheduler(config)
{
    /// <summary>γ in [0, 1] (diffusers' step argument <c>eta</c>, default 0.3).</summary>
    public double Eta { get; set; } = 0.3;

    /// <summary>Given original_inference_steps explicitly, diffusers' TCD picks from every training timestep below
    /// T·strength; otherwise from the config's grid (every training timestep when the config's is null).</summary>
    private protected override (long[] Grid, int OriginalSteps) OriginGrid(int? originalInferenceSteps, double strength)
    {
        if (originalInferenceSteps is null && Config.OriginalInferenceSteps is not null) return base.OriginGrid(null, strength);
        var grid = Enumerable.Range(0, (int)(NumTrainTimesteps * strength)).Select(t => (long)t).ToArray();
        return (grid, originalInferenceSteps ?? NumTrainTimesteps);
    }

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, Generator? generator = null,
        Tensor? noise = null, IReadOnlyList<Generator>? generators = null)
    {
        if (Eta is < 0 or > 1 || double.IsNaN(Eta))
            throw new ArgumentOutOfRangeException(nameof(Eta), $"TCD's eta (gamma) must be in [0, 1], got {Eta}");
        var (steps, index) = BeginStep(timestep);
        long t = TimestepIndex.Integral(timestep);
        long prev = index + 1 < TimestepValues.Length ? TimestepValues[index + 1] : 0;
        long s = (long)MathF.Floor((float)(1 - Eta) * prev);  // float32, as torch computes it
        var drawn = Eta > 0 && index != steps - 1 ? StepNoise.Take(modelOutput, generator, noise, generators) : null;

        using var scope = NewDisposeScope();
        using var ts = tensor(s);
        var (x0, eps) = ConvertModelOutput(modelOutput, t, sample);
        var noised = DdimJump(x0, eps, ts);
        var prevSample = noised.alias();
        if (drawn is not null)
        {
            // forward from s to t_prev: q(x_prev | x_s)
            using var tp = tensor(prev);
            var ratio = PerSample(AlphaProd(tp, sample.device) / AlphaProd(ts, sample.device), sample);
            prevSample = ratio.sqrt() * noised + (1 - ratio).sqrt() * drawn;
        }
        StepIndex = index + 1;
        return new(prevSample.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope())
        {
            PredNoisedSample = noised.MoveToOuterDisposeScope(), Noise = drawn,
        };
    }
}
