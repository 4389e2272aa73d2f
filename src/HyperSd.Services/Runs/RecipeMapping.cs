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
            Lora = StudentLora(recipe), CheckpointEvery = t.CheckpointEvery,
            LoraFormat = t.LoraFormat == LoraFormat.Peft ? LoraFileFormat.Peft : LoraFileFormat.Kohya,
        };
    }

    /// <summary>The student's LoRA (null: full fine-tuning of a teacher copy).</summary>
    public static LoraConfig? StudentLora(Recipe recipe) =>
        recipe.Tscd.Lora is { } lora ? new LoraConfig(lora.Rank, lora.Alpha, lora.TargetModules) : null;

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

    /// <summary>The evaluation prompts: the file's lines, or the toy world's held-out prompts.</summary>
    public static IReadOnlyList<string> EvaluationPrompts(Recipe recipe) => recipe.Evaluation.PromptsFile is { } file
        ? ReadPromptsFile(file, "evaluation.prompts_file")
        : ToyWorld.EvaluationPrompts(recipe.Evaluation.Prompts ?? throw new RecipeValidationException(recipe.Name,
            [new("evaluation.prompts", "evaluation.prompts or evaluation.prompts_file is required")]));

    /// <summary>The most a prompts file may hold: prompts are lines of text, not data.</summary>
    public const long MaxPromptsFileBytes = 4 << 20;

    /// <summary>The non-blank lines of a prompts file, read once at submission; <paramref name="field"/> names the recipe
    /// field in errors. Only a regular file (after links) of at most <see cref="MaxPromptsFileBytes"/>: a device such as
    /// /dev/zero or a huge file is refused before it is read.</summary>
    public static IReadOnlyList<string> ReadPromptsFile(string path, string field)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is not null && info.ResolveLinkTarget(true) is FileInfo target) info = target;
        if (!info.Exists)
            throw new FileNotFoundException($"{field}: no such file: {path}", path);
        if (info.Length > MaxPromptsFileBytes)
            throw new InvalidDataException(
                $"{field}: {path} is {info.Length:N0} bytes; a prompts file holds at most {MaxPromptsFileBytes:N0}");
        // a device or pipe reports length 0 but never ends: read no more than the limit
        using var stream = new FileStream(info.FullName, FileMode.Open, FileAccess.Read);
        var buffer = new byte[MaxPromptsFileBytes + 1];
        int read = 0, n;
        while (read < buffer.Length && (n = stream.Read(buffer, read, buffer.Length - read)) > 0) read += n;
        if (read > MaxPromptsFileBytes)
            throw new InvalidDataException($"{field}: {path} holds more than {MaxPromptsFileBytes:N0} bytes (not a regular file?)");
        var prompts = System.Text.Encoding.UTF8.GetString(buffer, 0, read).Split('\n')
            .Select(l => l.Trim()).Where(l => l.Length > 0).ToList();
        return prompts.Count > 0 ? prompts : throw new InvalidDataException($"{field}: {path} has no prompts");
    }
}
