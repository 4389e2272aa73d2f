using System.Diagnostics;
using System.Globalization;
using System.Text;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Trajectories;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Toy;

/// <summary>A distillation recipe to compare: its name and TSCD schedule (one stage with k = 1 is plain consistency distillation).</summary>
public sealed record DistillationVariant(string Name, TscdConfig Config);

public sealed record ToyDistillationOptions
{
    public int DatasetSize { get; init; } = 4096;
    public int DatasetSeed { get; init; } = 1;
    public int TrajectoryCount { get; init; } = 8192;
    /// <summary>LCM-form guidance w of the teacher's trajectory steps (CFG scale w + 1).</summary>
    public double GuidanceMin { get; init; } = 1.5;
    public double GuidanceMax { get; init; } = 2.5;
    /// <summary>CFG scale the teacher samples with in the evaluation.</summary>
    public double TeacherGuidance { get; init; } = 3.0;
    /// <summary>Training steps of one TSCD stage; the one-stage baseline gets the same total.</summary>
    public int StageSteps { get; init; } = 300;
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 1e-3;
    public int LoraRank { get; init; } = 16;
    public int EvaluationPrompts { get; init; } = 256;
    public int RealImages { get; init; } = 1024;
    public IReadOnlyList<int> Steps { get; init; } = [1, 2, 4, 8];
    public int TeacherReferenceSteps { get; init; } = 25;
    public long Seed { get; init; }

    SegmentStageConfig Stage => new()
    {
        Steps = StageSteps, BatchSize = BatchSize, LearningRate = LearningRate, Seed = Seed, EmaDecay = 0, HuberC = 0.001,
        Lora = new(LoraRank, LoraRank), CheckpointEvery = Math.Max(50, StageSteps / 4), DiscriminatorLearningRate = 1e-4,
    };

    /// <summary>The table's rows: the LCM-style baseline (k = 1, MSE only, 4× the stage steps), TSCD 8→4→2→1 with MSE
    /// only, and TSCD with the adversarial term.</summary>
    public IReadOnlyList<DistillationVariant> Variants => [
        new("cd-k1 (LCM-style baseline)", new TscdConfig
        {
            Stages = [1], Stage = Stage with { Steps = 4 * StageSteps }, Weights = new Dictionary<int, LossWeights> { [1] = new(1, 0) },
        }),
        new("tscd 8-4-2-1 (mse)", new TscdConfig
        {
            Stage = Stage, Weights = new Dictionary<int, LossWeights> { [8] = new(1, 0), [4] = new(1, 0), [2] = new(1, 0), [1] = new(1, 0) },
        }),
        new("tscd 8-4-2-1 (mse+adv)", new TscdConfig { Stage = Stage }),
    ];
}

/// <summary>Wall time and loss of one phase of a run (for the report).</summary>
public sealed record PhaseReport(string Phase, double Seconds, string Detail);

public sealed record ToyDistillationReport(IReadOnlyList<EvaluationRow> Rows, IReadOnlyList<PhaseReport> Phases)
{
    /// <summary>The results table: one row per model and sampler, toy-FID and prompt adherence per step count.</summary>
    public string ToMarkdown()
    {
        var inv = CultureInfo.InvariantCulture;
        var steps = Rows.Select(r => r.Steps).Distinct().Order().ToList();
        var sb = new StringBuilder();
        sb.Append("| model | sampler |").Append(string.Concat(steps.Select(s => $" FD@{s} |"))).Append(string.Concat(steps.Select(s => $" adh@{s} |"))).AppendLine();
        sb.Append("| --- | --- |").Append(string.Concat(Enumerable.Repeat(" ---: |", 2 * steps.Count))).AppendLine();
        foreach (var group in Rows.GroupBy(r => (r.Model, r.Sampler)))
        {
            string Cell(string metric, int s) => group.FirstOrDefault(r => r.Metric == metric && r.Steps == s) is { } r
                ? r.Value.ToString(metric == "fd" ? "F2" : "F3", inv) : "";
            sb.Append($"| {group.Key.Model} | {group.Key.Sampler} |")
              .Append(string.Concat(steps.Select(s => $" {Cell("fd", s)} |")))
              .Append(string.Concat(steps.Select(s => $" {Cell("adherence", s)} |"))).AppendLine();
        }
        return sb.ToString();
    }

    public double Value(string model, string sampler, int steps, string metric) =>
        Rows.Single(r => r.Model == model && r.Sampler == sampler && r.Steps == steps && r.Metric == metric).Value;
}

/// <summary>
/// The toy world's distillation experiment, end to end on one machine: encode a dataset, generate teacher trajectories,
/// train each variant, and evaluate the teacher and every student with the same prompts and seeds.
/// </summary>
public static class ToyDistillation
{
    public static ToyDistillationReport Run(StableDiffusionPipeline teacher, ToyRecognizer recognizer, string workDir,
        ToyDistillationOptions options, IReadOnlyList<DistillationVariant>? variants = null, Action<string>? log = null,
        CancellationToken cancellation = default)
    {
        var phases = new List<PhaseReport>();
        var watch = Stopwatch.StartNew();
        void Phase(string name, string detail)
        {
            phases.Add(new PhaseReport(name, watch.Elapsed.TotalSeconds, detail));
            log?.Invoke($"{name}: {watch.Elapsed.TotalSeconds:F1} s {detail}");
            watch.Restart();
        }

        var ddpm = new DDPMScheduler(ToyWorld.Schedule("DDPMScheduler"));
        using var data = ToyWorld.CreateDataset(options.DatasetSize, options.DatasetSeed, teacher.Tokenizer, teacher.Vae);
        Phase("dataset", $"{data.Count} images");

        using var emptyIds = teacher.Tokenizer.Encode([""]);
        var shard = TeacherTrajectories.Generate(teacher.Unet, teacher.TextEncoder, ddpm, data, emptyIds,
            new TrajectoryOptions(options.TrajectoryCount, options.Seed, 50, options.GuidanceMin, options.GuidanceMax, 64), cancellation);
        Phase("trajectories", $"{options.TrajectoryCount} samples");

        var metrics = new ToyRecognizerMetrics(recognizer);
        using var real = metrics.RealFeatures(options.RealImages, 5_000_001);
        var evaluator = new Evaluator(metrics, real, metrics);
        var prompts = ToyWorld.EvaluationPrompts(options.EvaluationPrompts);
        var evalOptions = new EvaluationOptions { Steps = options.Steps, Height = 32, Width = 32 };
        var rows = new List<EvaluationRow>();
        Directory.CreateDirectory(workDir);

        rows.AddRange(evaluator.Evaluate("teacher", teacher, prompts, SamplerSpec.DdimTrailing(options.TeacherGuidance), evalOptions,
            Path.Combine(workDir, "grid-teacher.png")));
        rows.AddRange(evaluator.Evaluate("teacher", teacher, prompts, SamplerSpec.DdimTrailing(options.TeacherGuidance),
            evalOptions with { Steps = [options.TeacherReferenceSteps] }));
        Phase("evaluate teacher", "");

        foreach (var variant in variants ?? options.Variants)
        {
            var dir = Path.Combine(workDir, Slug(variant.Name));
            var results = SegmentConsistencyTrainer.TrainStages(variant.Config, teacher.Unet, teacher.TextEncoder, ddpm, [shard], dir,
                p => { if (p.Step % 100 == 0) log?.Invoke($"  {variant.Name} k={p.Segments} {p.Step}/{p.TotalSteps} loss {p.Losses.Consistency:G4}"); },
                cancellation);
            Phase($"train {variant.Name}", string.Join("; ", results.Select(r =>
                $"k={r.Metrics.Segments}: {r.Metrics.Steps} steps in {r.Metrics.Steps / r.Metrics.StepsPerSecond:F1} s, loss {r.Metrics.InitialLoss:G4} → {r.Metrics.FinalLoss:G4}")));
            var lora = results[^1].Lora ?? throw new InvalidOperationException("the toy variants train LoRAs");
            lora.Attach(teacher.Unet);
            try
            {
                foreach (var sampler in new[] { SamplerSpec.DdimTrailing(), SamplerSpec.Tcd(0.3) })
                    rows.AddRange(evaluator.Evaluate(variant.Name, teacher, prompts, sampler, evalOptions,
                        Path.Combine(workDir, $"grid-{Slug(variant.Name)}-{sampler.Name}.png")));
            }
            finally
            {
                lora.Detach();
                foreach (var r in results) r.Student.Dispose();
            }
            Phase($"evaluate {variant.Name}", "");
        }
        shard.Dispose();
        return new ToyDistillationReport(rows, phases);
    }

    static string Slug(string name) => new(name.Select(c => char.IsLetterOrDigit(c) ? c : '-').ToArray());
}
