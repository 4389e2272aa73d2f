using HyperSd.Diffusion.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.SegmentConsistency;

/// <summary>
/// The algebra of TSCD's consistency objective (PCM's phased form, c_skip = 0, c_out = 1): a model output at x_t is
/// turned into x̂0 and ε̂ and jumped by deterministic DDIM to the segment's end; the target is the same jump from the
/// teacher's x_{t−s}, or x_{t−s} itself when t − s is already the end.
/// </summary>
public static class ConsistencyTarget
{
    /// <summary>x̂0, ε̂ from <paramref name="modelOutput"/> at (<paramref name="sample"/>, <paramref name="timesteps"/>),
    /// then √ᾱ_end·x̂0 + √(1 − ᾱ_end)·ε̂.</summary>
    public static Tensor JumpToEnd(DDPMScheduler scheduler, Tensor modelOutput, Tensor timesteps, Tensor sample, Tensor endTimesteps)
    {
        using var scope = NewDisposeScope();
        var (x0, eps) = scheduler.ConvertModelOutput(modelOutput, timesteps, sample);
        return scheduler.DdimJump(x0, eps, endTimesteps).MoveToOuterDisposeScope();
    }

    /// <summary>Per sample: x_{t−s} where t − s is on the segment boundary, else the jumped target.</summary>
    public static Tensor Select(Tensor prevOnBoundary, Tensor prevLatents, Tensor jumpedTarget)
    {
        using var scope = NewDisposeScope();
        var mask = prevOnBoundary.to(ScalarType.Bool, jumpedTarget.device).reshape(-1, 1, 1, 1);
        return where(mask, prevLatents.to(jumpedTarget.dtype), jumpedTarget).MoveToOuterDisposeScope();
    }

    /// <summary>Forward diffusion from the segment end to t_adv ≥ t_end:
    /// x' = √(ᾱ_adv/ᾱ_end)·x + √(1 − ᾱ_adv/ᾱ_end)·z.</summary>
    public static Tensor Renoise(DDPMScheduler scheduler, Tensor x, Tensor endTimesteps, Tensor advTimesteps, Tensor noise)
    {
        using var scope = NewDisposeScope();
        var ratio = (scheduler.AlphaProd(advTimesteps, x.device) / scheduler.AlphaProd(endTimesteps, x.device))
            .to(x.dtype).reshape(-1, 1, 1, 1);
        return (ratio.sqrt() * x + (1 - ratio).sqrt() * noise).MoveToOuterDisposeScope();
    }

    /// <summary>The adversarial pair at t_adv: the student's output (fake) and, when given, the target (real) re-noised from
    /// the segment end, with independent noise (PCM) or one draw for both. Draws from <paramref name="generator"/> in a
    /// fixed order (the fake's noise, then the real's), so the fake is the same under both.</summary>
    public static (Tensor Fake, Tensor? Real) RenoisePair(DDPMScheduler scheduler, Tensor prediction, Tensor? target,
        Tensor endTimesteps, Tensor advTimesteps, AdversarialNoise noise, Generator generator)
    {
        using var scope = NewDisposeScope();
        Tensor Draw() => randn(prediction.shape, prediction.dtype, generator: generator).to(prediction.device);
        var z = Draw();
        var fake = Renoise(scheduler, prediction, endTimesteps, advTimesteps, z).MoveToOuterDisposeScope();
        var real = target is null ? null : Renoise(scheduler, target, endTimesteps, advTimesteps,
            noise == AdversarialNoise.Shared ? z : Draw()).MoveToOuterDisposeScope();
        return (fake, real);
    }

    /// <summary>The consistency distance: pseudo-Huber mean(√(d² + c²) − c) (LCM/PCM, c = 0.001), or mean squared
    /// error for <paramref name="huberC"/> null.</summary>
    public static Tensor Loss(Tensor prediction, Tensor target, double? huberC)
    {
        using var scope = NewDisposeScope();
        var d = prediction.to(ScalarType.Float32) - target.to(ScalarType.Float32);
        var loss = huberC is { } c ? ((d.square() + c * c).sqrt() - c).mean() : d.square().mean();
        return loss.MoveToOuterDisposeScope();
    }
}
