using System.Security.Cryptography;
using System.Text;
using HyperSd.Diffusion.Lora;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Toy;
using HyperSd.Distillation.Trajectories;

namespace HyperSd.Recipes;

/// <summary>The recipe onto the Distillation library's settings, and back to YAML.</summary>
public sealed partial record Recipe
{
    /// <summary>The normalised YAML: every field, defaults filled in, fixed key order, no comments.</summary>
    public string ToYaml() => RecipeLoader.Serializer.Serialize(this with
    {
        // descending k, as the stages run, whatever order the file gave
        Tscd = Tscd with { Weights = Tscd.Weights.OrderByDescending(kv => kv.Key).ToDictionary() },
    });

    /// <summary>SHA-256 (lower-case hex) of <see cref="ToYaml"/>: equal for recipes that mean the same run.</summary>
    public string Sha256() => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(ToYaml())));

    /// <summary>Side of the square training and evaluation images in pixels.</summary>
    public int ImageResolution() => Dataset.Resolution ?? (Model.Source, Model.Architecture) switch
    {
        (ModelSource.Toy, _) => ToyShapes.Resolution,
        (_, ModelArchitecture.Sd15) => 512,
        _ => 1024,
    };

    /// <summary>The model's dtype as TorchSharp names it.</summary>
    public TorchSharp.torch.ScalarType TorchDType() => Model.Dtype switch
    {
        ModelDType.Float16 => TorchSharp.torch.ScalarType.Float16,
        ModelDType.Bfloat16 => TorchSharp.torch.ScalarType.BFloat16,
        _ => TorchSharp.torch.ScalarType.Float32,
    };

    public TrajectoryOptions ToTrajectoryOptions() => new(Trajectories.Count, Seed, Trajectories.SolverSteps,
        Trajectories.GuidanceMin, Trajectories.GuidanceMax, Trajectories.BatchSize, Trajectories.EmptyPromptProbability);

    public TscdConfig ToTscdConfig() => new()
    {
        Stages = [.. Tscd.Segments],
        Stage = new SegmentStageConfig
        {
            SolverSteps = Trajectories.SolverSteps, Steps = Tscd.StepsPerStage, BatchSize = Tscd.BatchSize, Seed = Seed,
            LearningRate = Tscd.LearningRate, LearningRateSchedule = Tscd.LrScheduler, WarmupSteps = Tscd.LrWarmupSteps, WeightDecay = Tscd.WeightDecay, MaxGradNorm = Tscd.MaxGradNorm,
            EmaDecay = Tscd.EmaDecay, PerturbationScale = Tscd.PerturbationScale,
            HuberC = Tscd.Loss == ConsistencyLoss.Huber ? Tscd.HuberC : null,
            DiscriminatorLearningRate = Tscd.DiscriminatorLearningRate, DiscriminatorChannels = Tscd.DiscriminatorChannels,
            Lora = Tscd.Lora is { } lora ? new LoraConfig(lora.Rank, lora.Alpha, lora.TargetModules) : null,
            CheckpointEvery = Tscd.CheckpointEvery, LoraFormat = Tscd.LoraFormat,
        },
        Weights = Tscd.Weights.ToDictionary(kv => kv.Key, kv => new LossWeights(kv.Value.Mse, kv.Value.Adversarial)),
    };

    public EvaluationOptions ToEvaluationOptions() => new()
    {
        Steps = [.. Evaluation.Steps], Height = ImageResolution(), Width = ImageResolution(), Seed = Evaluation.Seed,
        BatchSize = Evaluation.BatchSize, GridPrompts = Evaluation.GridPrompts,
    };

    /// <summary>The samplers the student is evaluated with (guidance off, as Hyper-SD's LoRAs are used).</summary>
    public IReadOnlyList<SamplerSpec> ToSamplerSpecs() => Evaluation.Samplers.Select(s => s switch
    {
        EvaluationSampler.Tcd => SamplerSpec.Tcd(Evaluation.TcdEta),
        _ => SamplerSpec.DdimTrailing(),
    }).ToList();

    /// <summary>The non-blank lines of a prompts file; <paramref name="field"/> names the recipe field in errors.</summary>
    public static IReadOnlyList<string> ReadPromptsFile(string path, string field)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{field}: no such file: {path}", path);
        var prompts = File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0).ToList();
        return prompts.Count > 0 ? prompts : throw new InvalidDataException($"{field}: {path} has no prompts");
    }

    /// <summary>The generator's sampler (guidance off).</summary>
    public SamplerSpec ToGenerationSampler() => Generation?.Sampler == EvaluationSampler.Tcd ? SamplerSpec.Tcd(Generation.TcdEta) : SamplerSpec.DdimTrailing();

    /// <summary>The teacher's samplers with its CFG scale, at the student's steps; the first (plain DDIM) also at teacher_steps.</summary>
    public IReadOnlyList<SamplerSpec> ToTeacherSamplerSpecs() => SamplerSpec.Teacher(Evaluation.TeacherGuidance);
}
