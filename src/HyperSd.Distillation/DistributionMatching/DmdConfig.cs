using HyperSd.Diffusion.Lora;

namespace HyperSd.Distillation.DistributionMatching;

/// <summary>
/// One-step enhancement with score distillation (Hyper-SD §3.3) on the 1-step student, in DMD2's form. Defaults are DMD2's
/// SD1.5 settings where it has one (lr 1e-5 for both models, AdamW weight decay 0.01, grad clip 10, warm-up 500, real
/// guidance 1.75, the generator updated every 10th iteration, t in [2 %, 98 %], GAN weights G 1e-3 / D 1e-2 when the head
/// is on) and DMD's regression weight 0.25.
/// </summary>
public sealed record DmdConfig
{
    /// <summary>Training iterations: the fake score trains on every one, the generator on every
    /// <see cref="GeneratorUpdateEvery"/>-th (the first included).</summary>
    public int Steps { get; init; } = 4000;
    public int BatchSize { get; init; } = 8;
    public long Seed { get; init; }
    public double GeneratorLearningRate { get; init; } = 1e-5;
    public double FakeScoreLearningRate { get; init; } = 1e-5;
    public double WeightDecay { get; init; } = 0.01;
    public double MaxGradNorm { get; init; } = 10;

    /// <summary>Linear warm-up of both learning rates over this many iterations.</summary>
    public int WarmupSteps { get; init; } = 500;

    /// <summary>Two time scales: the generator steps on every n-th iteration (DMD2: 10 for SD1.5, 5 for SDXL).</summary>
    public int GeneratorUpdateEvery { get; init; } = 10;

    /// <summary>The distribution-matching timestep range as fractions of the training timesteps:
    /// t ~ U[⌊min·T⌋, ⌊max·T⌋].</summary>
    public double MinTimestepFraction { get; init; } = 0.02;
    public double MaxTimestepFraction { get; init; } = 0.98;

    /// <summary>The real score's classifier-free guidance scale (ordinary CFG: ε_u + g·(ε_c − ε_u); 1 = none).</summary>
    public double RealGuidance { get; init; } = 1.75;

    public double DistributionMatchingWeight { get; init; } = 1;

    /// <summary>Weight of the MSE between the generator's output and the teacher's ODE solution from the same noise; 0 = off.</summary>
    public double RegressionWeight { get; init; } = 0.25;

    /// <summary>How many (noise, teacher sample) pairs the regression draws from (made once, stored in the stage folder).</summary>
    public int RegressionPairs { get; init; } = 1024;

    /// <summary>The teacher's DDIM steps (trailing grid) for the regression pairs.</summary>
    public int RegressionTeacherSteps { get; init; } = 25;

    /// <summary>The teacher's CFG scale for the regression pairs; null = <see cref="RealGuidance"/>.</summary>
    public double? RegressionGuidance { get; init; }

    /// <summary>Weight of the feedback term mean(relu(α − r)) on the decoded generator output; &gt; 0 needs rewards.</summary>
    public double RewardWeight { get; init; }
    public double RewardAlpha { get; init; } = 2.0;

    /// <summary>The GAN head on the fake score UNet's mid-block features: the generator's weight (0 = no head; DMD2 1e-3) and
    /// the head's (and fake score's) discriminator weight.</summary>
    public double GanGeneratorWeight { get; init; }
    public double GanDiscriminatorWeight { get; init; } = 1e-2;

    /// <summary>The fake score: a second LoRA on the base UNet (LCM targets), starting as the teacher.</summary>
    public int FakeScoreRank { get; init; } = 64;
    public double FakeScoreAlpha { get; init; } = 8;

    public int CheckpointEvery { get; init; } = 500;
    public LoraFileFormat LoraFormat { get; init; } = LoraFileFormat.Kohya;

    /// <summary>The regression pairs' guidance scale (internal: not a setting of its own).</summary>
    internal double TeacherGuidance => RegressionGuidance ?? RealGuidance;

    public void Validate()
    {
        void Require(bool ok, string field, object value, string expected)
        {
            if (!ok) throw new ArgumentException($"DMD config: '{field}' must be {expected}, got {value}");
        }
        Require(Steps >= 1, "steps", Steps, "at least 1");
        Require(BatchSize >= 1, "batch_size", BatchSize, "at least 1");
        Require(GeneratorLearningRate > 0, "generator_learning_rate", GeneratorLearningRate, "positive");
        Require(FakeScoreLearningRate > 0, "fake_score_learning_rate", FakeScoreLearningRate, "positive");
        Require(WeightDecay >= 0, "weight_decay", WeightDecay, "non-negative");
        Require(MaxGradNorm > 0, "max_grad_norm", MaxGradNorm, "positive");
        Require(WarmupSteps >= 0 && WarmupSteps < Steps, "warmup_steps", WarmupSteps, $"in [0, steps) ([0, {Steps}))");
        Require(GeneratorUpdateEvery >= 1, "generator_update_every", GeneratorUpdateEvery, "at least 1");
        Require(MinTimestepFraction is >= 0 and <= 1, "min_timestep_fraction", MinTimestepFraction, "in [0, 1]");
        Require(MaxTimestepFraction is >= 0 and <= 1, "max_timestep_fraction", MaxTimestepFraction, "in [0, 1]");
        Require(MinTimestepFraction < MaxTimestepFraction, "min_timestep_fraction", MinTimestepFraction,
            $"below max_timestep_fraction ({MaxTimestepFraction})");
        Require(RealGuidance >= 1 && double.IsFinite(RealGuidance), "real_guidance", RealGuidance, "finite and at least 1 (1 = no CFG)");
        Require(DistributionMatchingWeight >= 0, "distribution_matching_weight", DistributionMatchingWeight, "non-negative");
        Require(RegressionWeight >= 0, "regression_weight", RegressionWeight, "non-negative");
        Require(RegressionPairs >= (RegressionWeight > 0 ? 1 : 0), "regression_pairs", RegressionPairs,
            RegressionWeight > 0 ? "at least 1 while regression_weight > 0" : "non-negative");
        Require(RegressionTeacherSteps >= 1, "regression_teacher_steps", RegressionTeacherSteps, "at least 1");
        Require(RegressionGuidance is null || (RegressionGuidance >= 1 && double.IsFinite(RegressionGuidance.Value)),
            "regression_guidance", RegressionGuidance!, "finite and at least 1, or null (real_guidance)");
        Require(RewardWeight >= 0, "reward_weight", RewardWeight, "non-negative");
        Require(double.IsFinite(RewardAlpha), "reward_alpha", RewardAlpha, "finite");
        Require(GanGeneratorWeight >= 0, "gan_generator_weight", GanGeneratorWeight, "non-negative");
        Require(GanDiscriminatorWeight >= 0, "gan_discriminator_weight", GanDiscriminatorWeight, "non-negative");
        Require(GanDiscriminatorWeight > 0 || GanGeneratorWeight == 0, "gan_discriminator_weight", GanDiscriminatorWeight,
            "positive while gan_generator_weight > 0 (the head must train)");
        Require(DistributionMatchingWeight + RegressionWeight + RewardWeight + GanGeneratorWeight > 0, "distribution_matching_weight",
            DistributionMatchingWeight, "positive, or another generator loss weight must be (nothing would train the generator)");
        Require(FakeScoreRank >= 1, "fake_score_rank", FakeScoreRank, "at least 1");
        Require(FakeScoreAlpha > 0, "fake_score_alpha", FakeScoreAlpha, "positive");
        Require(CheckpointEvery >= 1, "checkpoint_every", CheckpointEvery, "at least 1");
    }
}
