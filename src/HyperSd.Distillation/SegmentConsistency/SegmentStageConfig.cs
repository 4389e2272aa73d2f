using HyperSd.Diffusion.Lora;

namespace HyperSd.Distillation.SegmentConsistency;

/// <summary>The weights of TSCD's two loss terms in one stage.</summary>
public enum LearningRateSchedule { Constant, Cosine }

/// <summary>The learning rate at a student update of a stage (0-based): linear warm-up, then constant or cosine to 0. It counts
/// the student's updates, not the steps: PCM's scheduler steps on student steps only.</summary>
public static class LearningRateSchedules
{
    public static double At(SegmentStageConfig config, int update)
    {
        if (update < config.WarmupSteps) return Warmup(config.LearningRate, config.WarmupSteps, update);
        if (config.LearningRateSchedule == LearningRateSchedule.Constant) return config.LearningRate;
        double progress = (double)(update - config.WarmupSteps) / Math.Max(1, config.StudentUpdates - config.WarmupSteps);
        return config.LearningRate * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }

    /// <summary>Linear warm-up from 0 over <paramref name="warmupSteps"/> steps, then <paramref name="learningRate"/>
    /// (diffusers' constant_with_warmup).</summary>
    public static double Warmup(double learningRate, int warmupSteps, int step) =>
        step < warmupSteps ? learningRate * (step + 1) / (warmupSteps + 1) : learningRate;
}

public sealed record LossWeights(double Mse, double Adversarial);

/// <summary>How student and discriminator updates share the steps of a stage with the adversarial term. Alternate (PCM):
/// even steps update only the discriminator, odd steps only the student (consistency + adversarial loss), each step on
/// its own batch. Joint: every step updates the student, then the discriminator, on one batch.</summary>
public enum AdversarialSchedule { Alternate, Joint }

/// <summary>The noise that re-noises student output (fake) and target (real) to t_adv: independent draws (PCM) or one
/// draw shared by both.</summary>
public enum AdversarialNoise { Independent, Shared }

/// <summary>One TSCD stage: k segments on a solver grid, trained for <see cref="Steps"/> steps from trajectory shards.
/// Defaults follow PCM's SD1.5 script where it has one (Huber c = 0.001, AdamW weight decay 1e-3, EMA decay 0 = the online
/// student as target, LoRA rank 64 / alpha 8; its adversarial step: alternating updates, 4 heads per feature map,
/// independent re-noising, D AdamW (0, 0.999) with lr 1e-5, weight decay 1e-3 and clipping 1.0).</summary>
public sealed record SegmentStageConfig
{
    public int Segments { get; init; } = 8;
    public int SolverSteps { get; init; } = 50;
    public int Steps { get; init; } = 1000;
    public int BatchSize { get; init; } = 8;
    public long Seed { get; init; }
    public double LearningRate { get; init; } = 5e-6;
    public double WeightDecay { get; init; } = 1e-3;
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>Linear warm-up from 0 over this many student updates; every stage warms up again, as its AdamW starts afresh.
    /// 0 is PCM's effective setting: its argparse says 500, but its default "constant" scheduler ignores warm-up.</summary>
    public int WarmupSteps { get; init; }

    /// <summary>After warm-up: constant (diffusers' default) or cosine decay to 0 at the stage's last step.</summary>
    public LearningRateSchedule LearningRateSchedule { get; init; } = LearningRateSchedule.Constant;

    /// <summary>EMA of the student used for targets; 0 = the online student under no-grad (PCM).</summary>
    public double EmaDecay { get; init; }

    /// <summary>ζ: the student sees x_t + ζ·z (Hyper-SD's noise perturbation); 0 = off.</summary>
    public double PerturbationScale { get; init; }

    /// <summary>Pseudo-Huber c; null = plain MSE.</summary>
    public double? HuberC { get; init; } = 0.001;

    public LossWeights Weights { get; init; } = new(1, 0);
    public double DiscriminatorLearningRate { get; init; } = 1e-5;

    /// <summary>Inner width of the discriminator heads; null = the width of the feature each reads.</summary>
    public int? DiscriminatorChannels { get; init; }

    /// <summary>Independent heads on each feature map (PCM: 4, 36 in all for SD1.5), averaged in the hinge losses.</summary>
    public int DiscriminatorHeadsPerFeature { get; init; } = 4;

    /// <summary>Decoupled (AdamW) weight decay of the discriminator heads (PCM: 1e-3).</summary>
    public double DiscriminatorWeightDecay { get; init; } = 1e-3;

    /// <summary>Gradient clipping norm of the discriminator heads (PCM: 1.0); null = no clipping.</summary>
    public double? DiscriminatorMaxGradNorm { get; init; } = 1.0;

    public AdversarialSchedule AdversarialSchedule { get; init; } = AdversarialSchedule.Alternate;
    public AdversarialNoise AdversarialNoise { get; init; } = AdversarialNoise.Independent;

    /// <summary>Whether steps alternate between discriminator and student (only with the adversarial term).</summary>
    public bool Alternates => AdversarialSchedule == AdversarialSchedule.Alternate && Weights.Adversarial > 0;

    /// <summary>Student updates in the stage: every step, or the odd ones when alternating.</summary>
    public int StudentUpdates => Alternates ? Steps / 2 : Steps;

    /// <summary>Whether step (0-based) updates the student; when alternating, its update index is step / 2.</summary>
    public bool IsStudentStep(int step) => !Alternates || step % 2 == 1;

    /// <summary>Whether step (0-based) updates the discriminator (PCM: global_step % 2 == 0).</summary>
    public bool IsDiscriminatorStep(int step) => Weights.Adversarial > 0 && (!Alternates || step % 2 == 0);

    /// <summary>The index of the student's update at <paramref name="step"/> (the learning-rate schedule's position).</summary>
    public int StudentUpdateAt(int step) => Alternates ? step / 2 : step;

    /// <summary>The LoRA to train; null = full fine-tuning of a teacher copy.</summary>
    public LoraConfig? Lora { get; init; } = new(64, 8);

    public int CheckpointEvery { get; init; } = 500;
    public LoraFileFormat LoraFormat { get; init; } = LoraFileFormat.Kohya;

    public void Validate()
    {
        void Require(bool ok, string field, object value, string expected)
        {
            if (!ok) throw new ArgumentException($"TSCD stage config: '{field}' must be {expected}, got {value}");
        }
        Require(Segments >= 1, "segments", Segments, "at least 1");
        Require(Segments <= SolverSteps, "segments", Segments, $"at most solver_steps ({SolverSteps})");
        Require(Steps >= 1, "steps", Steps, "at least 1");
        Require(StudentUpdates >= 1, "steps", Steps, "at least 2 when alternating (odd steps update the student)");
        Require(BatchSize >= 1, "batch_size", BatchSize, "at least 1");
        Require(LearningRate > 0, "learning_rate", LearningRate, "positive");
        Require(WarmupSteps >= 0 && WarmupSteps < StudentUpdates, "warmup_steps", WarmupSteps,
            $"in [0, student updates) ([0, {StudentUpdates}))");
        Require(MaxGradNorm > 0, "max_grad_norm", MaxGradNorm, "positive");
        Require(EmaDecay is >= 0 and < 1, "ema_decay", EmaDecay, "in [0, 1)");
        Require(PerturbationScale >= 0, "perturbation_scale", PerturbationScale, "non-negative");
        Require(HuberC is null or > 0, "huber_c", HuberC!, "positive or null (MSE)");
        Require(Weights.Mse >= 0 && Weights.Adversarial >= 0, "weights", Weights, "non-negative");
        Require(DiscriminatorHeadsPerFeature >= 1, "discriminator_heads_per_feature", DiscriminatorHeadsPerFeature, "at least 1");
        Require(DiscriminatorWeightDecay >= 0, "discriminator_weight_decay", DiscriminatorWeightDecay, "non-negative");
        Require(DiscriminatorMaxGradNorm is null or > 0, "discriminator_max_grad_norm", DiscriminatorMaxGradNorm!,
            "positive or null (no clipping)");
        Require(CheckpointEvery >= 1, "checkpoint_every", CheckpointEvery, "at least 1");
    }
}

/// <summary>The whole TSCD schedule: stages k = 8 → 4 → 2 → 1, each from the last stage's weights, with loss weights
/// keyed by k (MSE high while segments are short, the adversarial term rising as they lengthen).</summary>
public sealed record TscdConfig
{
    public IReadOnlyList<int> Stages { get; init; } = [8, 4, 2, 1];

    /// <summary>Settings shared by every stage (its Segments and Weights are replaced per stage).</summary>
    public SegmentStageConfig Stage { get; init; } = new();

    public IReadOnlyDictionary<int, LossWeights> Weights { get; init; } = DefaultWeights;

    /// <summary>Defaults: pure MSE/Huber at k = 8, then PCM's 0.1 adversarial weight reached by k = 1.</summary>
    public static readonly IReadOnlyDictionary<int, LossWeights> DefaultWeights = new Dictionary<int, LossWeights>
    {
        [8] = new(1.0, 0.0), [4] = new(1.0, 0.02), [2] = new(0.8, 0.05), [1] = new(0.6, 0.1),
    };

    public SegmentStageConfig StageFor(int segments) => Stage with
    {
        Segments = segments,
        Weights = Weights.TryGetValue(segments, out var w) ? w
            : throw new ArgumentException($"TSCD config: no loss weights for k = {segments} " +
                                          $"(weights are given for k = {string.Join(", ", Weights.Keys)})"),
    };
}
