using HyperSd.Diffusion.Lora;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Toy;
using HyperSd.Distillation.Trajectories;
using HyperSd.Recipes;

namespace HyperSd.Services.Runs;

/// <summary>
/// The one place where a recipe (plain data, the user's input) becomes the Distillation library's typed configs. The
/// stage kinds call it when a run is planned; what it returns is stored with each stage, so workers never see the recipe.
/// </summary>
public static class RecipeMapping
{
    /// <summary>Side of the square training and evaluation images in pixels.</summary>
    public static int ImageResolution(Recipe recipe)
    {
        if (recipe.Model.Source != ModelSource.Toy)
            return recipe.Dataset.Resolution ?? (recipe.Model.Architecture == ModelArchitecture.Sd15 ? 512 : 1024);
        if (recipe.Dataset.Resolution is { } r && r != ToyShapes.Resolution)
            throw new RecipeValidationException(recipe.Name, [new("dataset.resolution",
                $"toy images are {ToyShapes.Resolution} px (allowed: {ToyShapes.Resolution}, got: {r})")]);
        return ToyShapes.Resolution;
    }

    public static TrajectoryOptions Trajectories(Recipe recipe)
    {
        var t = recipe.Trajectories;
        return new(t.Count, recipe.Seed, t.SolverSteps, t.GuidanceMin, t.GuidanceMax, t.BatchSize, t.EmptyPromptProbability);
    }

    /// <summary>The settings of TSCD stage k.</summary>
    public static SegmentStageConfig SegmentStage(Recipe recipe, int segments)
    {
        var t = recipe.Tscd;
        var weights = t.Weights.TryGetValue(segments, out var w) ? w
            : throw new RecipeValidationException(recipe.Name,
                [new($"tscd.weights.{segments}", "missing: every stage needs its loss weights")]);
        return new SegmentStageConfig
        {
            Segments = segments, SolverSteps = recipe.Trajectories.SolverSteps, Steps = t.StepsPerStage, BatchSize = t.BatchSize,
            Seed = recipe.Seed, LearningRate = t.LearningRate, WeightDecay = t.WeightDecay, MaxGradNorm = t.MaxGradNorm,
            WarmupSteps = t.LrWarmupSteps,
            LearningRateSchedule = t.LrScheduler == LrScheduler.Cosine ? LearningRateSchedule.Cosine : LearningRateSchedule.Constant,
            EmaDecay = t.EmaDecay, PerturbationScale = t.PerturbationScale,
            HuberC = t.Loss == ConsistencyLoss.Huber ? t.HuberC : null,
            Weights = new LossWeights(weights.Mse, weights.Adversarial),
            DiscriminatorLearningRate = t.DiscriminatorLearningRate, DiscriminatorChannels = t.DiscriminatorChannels,
            DiscriminatorHeadsPerFeature = t.DiscriminatorHeadsPerFeature, DiscriminatorWeightDecay = t.DiscriminatorWeightDecay,
            DiscriminatorMaxGradNorm = t.DiscriminatorMaxGradNorm,
            AdversarialSchedule = t.AdversarialSchedule == AdversarialSteps.Joint
                ? AdversarialSchedule.Joint : AdversarialSchedule.Alternate,
            AdversarialNoise = t.AdversarialNoise == NoiseDraw.Shared ? AdversarialNoise.Shared : AdversarialNoise.Independent,
            Lora = StudentLora(recipe), CheckpointEvery = t.CheckpointEvery,
            LoraFormat = LoraFormatOf(recipe),
        };
    }

    /// <summary>The settings of the ReFL stage on TSCD stage k's student.</summary>
    public static Distillation.FeedbackLearning.ReflConfig Refl(Recipe recipe, int students)
    {
        var r = recipe.Refl ?? throw new ArgumentException("the recipe has no refl section");
        return new()
        {
            StudentSteps = students, StopFrom = r.StopFrom, Steps = r.Steps, BatchSize = r.BatchSize, Seed = recipe.Seed,
            LearningRate = r.LearningRate, WeightDecay = r.WeightDecay, MaxGradNorm = r.MaxGradNorm, Alpha = r.Alpha,
            RewardScale = r.RewardScale, AnchorWeight = r.AnchorWeight, CheckpointEvery = r.CheckpointEvery,
            LoraFormat = LoraFormatOf(recipe),
        };
    }

    /// <summary>The settings of the DMD stage on the 1-step student.</summary>
    public static Distillation.DistributionMatching.DmdConfig Dmd(Recipe recipe)
    {
        var d = recipe.Dmd ?? throw new ArgumentException("the recipe has no dmd section");
        return new()
        {
            Steps = d.Steps, BatchSize = d.BatchSize, Seed = recipe.Seed, GeneratorLearningRate = d.GeneratorLearningRate,
            FakeScoreLearningRate = d.FakeScoreLearningRate, WeightDecay = d.WeightDecay, MaxGradNorm = d.MaxGradNorm,
            WarmupSteps = d.WarmupSteps, GeneratorUpdateEvery = d.GeneratorUpdateEvery, MinTimestepFraction = d.MinTimestep,
            MaxTimestepFraction = d.MaxTimestep, RealGuidance = d.RealGuidance, DistributionMatchingWeight = d.DistributionMatchingWeight,
            RegressionWeight = d.RegressionWeight, RegressionPairs = d.RegressionPairs, RegressionTeacherSteps = d.RegressionTeacherSteps,
            RewardWeight = d.Rewards is null ? 0 : d.RewardWeight, RewardAlpha = d.RewardAlpha, GanGeneratorWeight = d.GanGeneratorWeight,
            GanDiscriminatorWeight = d.GanDiscriminatorWeight, FakeScoreRank = d.FakeScoreRank, FakeScoreAlpha = d.FakeScoreAlpha,
            CheckpointEvery = d.CheckpointEvery, LoraFormat = LoraFormatOf(recipe),
        };
    }

    /// <summary>The format the training stages write their LoRAs in (tscd.lora_format).</summary>
    static LoraFileFormat LoraFormatOf(Recipe recipe) => FileFormat(recipe.Tscd.LoraFormat);

    static LoraFileFormat FileFormat(LoraFormat format) => format == LoraFormat.Peft ? LoraFileFormat.Peft : LoraFileFormat.Kohya;

    /// <summary>The student's LoRA (null: full fine-tuning of a teacher copy).</summary>
    public static LoraConfig? StudentLora(Recipe recipe) =>
        recipe.Tscd.Lora is { } lora ? new LoraConfig(lora.Rank, lora.Alpha, lora.TargetModules) : null;

    /// <summary>The merge stage's settings, with a weight per source stage (<paramref name="sources"/>: the names of the
    /// stages that make LoRAs, in run order); the recipe's weights must name exactly those stages. Default weights are equal
    /// over the sources not in <paramref name="superseded"/> (those another stage continued), which get 0.</summary>
    public static LoraMerger.MergeSettings Merge(Recipe recipe, IReadOnlyList<string> sources, IReadOnlySet<string>? superseded = null)
    {
        var m = recipe.Merge ?? throw new ArgumentException("the recipe has no merge section");
        var lora = recipe.Tscd.Lora ?? throw new RecipeValidationException(recipe.Name,
            [new("merge", "the merge needs LoRA stages (tscd.lora); a fully fine-tuned UNet has no LoRA to merge")]);
        if (sources.Count == 0)
            throw new RecipeValidationException(recipe.Name, [new("merge", "the recipe plans no stage that makes a LoRA")]);
        var active = sources.Where(s => superseded?.Contains(s) != true).ToList();
        var weights = m.Weights ?? sources.ToDictionary(s => s, s => active.Contains(s) ? 1.0 / active.Count : 0);
        var missing = sources.Where(s => !weights.ContainsKey(s)).ToList();
        var unknown = weights.Keys.Where(k => !sources.Contains(k)).ToList();
        if (missing.Count + unknown.Count > 0)
            throw new RecipeValidationException(recipe.Name, [new("merge.weights",
                $"must give a weight for each stage that makes a LoRA (expected: {string.Join(", ", sources)}; got: " +
                $"{string.Join(", ", weights.Keys)}){(unknown.Count > 0 ? $"; no such stage: {string.Join(", ", unknown)}" : "")}" +
                $"{(missing.Count > 0 ? $"; missing: {string.Join(", ", missing)}" : "")}")]);
        // in run order, so the report lists the sources as the stages ran
        return new(recipe.Model, recipe.Name, sources.ToDictionary(s => s, s => weights[s]), m.Rank ?? lora.Rank, m.ConvRank, m.ClampRank,
            m.Formats.Select(FileFormat).ToList(), m.Fuse);
    }

    public static EvaluationOptions Evaluation(Recipe recipe) => new()
    {
        Steps = [.. recipe.Evaluation.Steps], Height = ImageResolution(recipe), Width = ImageResolution(recipe),
        Seed = recipe.Evaluation.Seed,
        BatchSize = recipe.Evaluation.BatchSize, GridPrompts = recipe.Evaluation.GridPrompts,
    };

    /// <summary>The samplers the student is evaluated with (guidance off, as Hyper-SD's LoRAs are used).</summary>
    public static IReadOnlyList<SamplerSpec> StudentSamplers(Recipe recipe) =>
        recipe.Evaluation.Samplers.Select(s => Sampler(s, recipe.Evaluation.TcdEta)).ToList();

    /// <summary>The teacher's samplers with its CFG scale, at the student's steps; the first (plain DDIM) also at teacher_steps.</summary>
    public static IReadOnlyList<SamplerSpec> TeacherSamplers(Recipe recipe) => SamplerSpec.Teacher(recipe.Evaluation.TeacherGuidance);

    public static SamplerSpec Sampler(EvaluationSampler sampler, double tcdEta) =>
        sampler == EvaluationSampler.Tcd ? SamplerSpec.Tcd(tcdEta) : SamplerSpec.DdimTrailing();

    /// <summary>The toy world's held-out evaluation prompts (a recipe's prompts file is read by <see cref="RecipeInputs"/>).</summary>
    public static IReadOnlyList<string> ToyEvaluationPrompts(Recipe recipe) =>
        ToyWorld.EvaluationPrompts(recipe.Evaluation.Prompts ?? throw new RecipeValidationException(recipe.Name,
            [new("evaluation.prompts", "evaluation.prompts or evaluation.prompts_file is required")]));

    /// <summary>The prompts of a prompts file's text: its non-blank lines, trimmed.</summary>
    public static IReadOnlyList<string> PromptLines(string text) =>
        text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToList();
}
