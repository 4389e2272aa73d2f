using HyperSd.Distillation.SegmentConsistency;

namespace HyperSd.Distillation.Tests.SegmentConsistency;

public class LearningRateScheduleTests
{
    static readonly SegmentStageConfig Config = new() { Steps = 12, LearningRate = 1e-3, WarmupSteps = 3 };

    [Fact]
    public void Warm_up_rises_linearly_then_constant_holds()
    {
        var lrs = Enumerable.Range(0, Config.Steps).Select(s => LearningRateSchedules.At(Config, s)).ToList();
        Assert.Equal([0.25e-3, 0.5e-3, 0.75e-3], lrs.Take(3), new Close());
        Assert.All(lrs.Skip(3), lr => Assert.Equal(1e-3, lr, 12));
    }

    [Fact]
    public void Cosine_starts_at_the_peak_halves_midway_and_ends_near_zero()
    {
        var config = Config with { LearningRateSchedule = LearningRateSchedule.Cosine, WarmupSteps = 2, Steps = 102 };
        Assert.Equal(1e-3, LearningRateSchedules.At(config, 2), 12);
        Assert.Equal(0.5e-3, LearningRateSchedules.At(config, 52), 12);
        Assert.InRange(LearningRateSchedules.At(config, 101), 0, 1e-6);
        var decay = Enumerable.Range(2, 100).Select(s => LearningRateSchedules.At(config, s)).ToList();
        Assert.True(decay.Zip(decay.Skip(1)).All(p => p.Second < p.First), "cosine must fall every step");
    }

    [Fact]
    public void A_warm_up_as_long_as_the_stage_is_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => (Config with { WarmupSteps = 12 }).Validate());
        Assert.Contains("warmup_steps", e.Message);
    }

    /// <summary>PCM's scheduler steps on student steps only: when steps alternate, the warm-up counts student updates
    /// (step / 2 at the odd steps) and must end within them.</summary>
    [Fact]
    public void When_steps_alternate_the_schedule_counts_student_updates()
    {
        var alternating = Config with { Weights = new LossWeights(1, 0.1), WarmupSteps = 3 };
        Assert.Equal((6, true), (alternating.StudentUpdates, alternating.Alternates));
        Assert.Equal([0, 0, 1, 1, 2, 2], Enumerable.Range(0, 6).Select(alternating.StudentUpdateAt));
        Assert.Equal([false, true, false, true], Enumerable.Range(0, 4).Select(alternating.IsStudentStep));
        Assert.Equal([true, false, true, false], Enumerable.Range(0, 4).Select(alternating.IsDiscriminatorStep));
        var joint = alternating with { AdversarialSchedule = AdversarialSchedule.Joint };
        Assert.Equal((12, false), (joint.StudentUpdates, joint.Alternates));
        Assert.True(joint.IsStudentStep(0) && joint.IsDiscriminatorStep(1));
        Assert.Contains("[0, student updates) ([0, 6))", Assert.Throws<ArgumentException>(() =>
            (alternating with { WarmupSteps = 6 }).Validate()).Message);
        Assert.Contains("at least 2 when alternating", Assert.Throws<ArgumentException>(() =>
            (alternating with { Steps = 1, WarmupSteps = 0 }).Validate()).Message);
    }

    sealed class Close : IEqualityComparer<double>
    {
        public bool Equals(double a, double b) => Math.Abs(a - b) < 1e-12;
        public int GetHashCode(double x) => 0;
    }
}
