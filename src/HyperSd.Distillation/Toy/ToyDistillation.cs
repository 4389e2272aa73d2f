using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using HyperSd.Diffusion.Lora;
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
    public int StageSteps { get; init; } = 100;
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 1e-3;
    public int LoraRank { get; init; } = 16;
    public int EvaluationPrompts { get; init; } = 256;
    public int RealImages { get; init; } = 1024;
    public IReadOnlyList<int> Steps { get; init; } = [1, 2, 4, 8];
    public int TeacherReferenceSteps { get; init; } = 25;
    public long Seed { get; init; }
    /// <summary>Variants trained at once, one tensor thread each.</summary>
    public int Parallelism { get; init; } = Math.Max(1, Environment.ProcessorCount);

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

public sealed record ToyDistillationReport(IReadOnlyList<EvaluationRow> Rows, IReadOnlyList<PhaseReport> Phases,
    IReadOnlyDictionary<string, IReadOnlyList<SegmentStageMetrics>> Training)
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

    /// <summary>Wall time of each phase and each variant's training, for the report.</summary>
    public string PhasesMarkdown()
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder("| phase | wall time (s) | detail |\n| --- | ---: | --- |\n");
        foreach (var p in Phases) sb.AppendLine($"| {p.Phase} | {p.Seconds.ToString("F1", inv)} | {p.Detail} |");
        return sb.ToString();
    }

    public double Value(string model, string sampler, int steps, string metric) =>
        Rows.Single(r => r.Model == model && r.Sampler == sampler && r.Steps == steps && r.Metric == metric).Value;
}

/// <summary>
/// The toy world's distillation experiment, end to end on one machine: encode a dataset, generate teacher trajectories,
/// train each variant, and evaluate the teacher and every student with the same prompts and seeds. Variants train
/// concurrently (<see cref="ToyDistillationOptions.Parallelism"/>), each on its own teacher instance, since a student's
/// LoRA is attached to its teacher UNet while it predicts; all their randomness comes from their own seeded generators,
/// so the results do not depend on the parallelism.
/// </summary>
public static class ToyDistillation
{
    /// <param name="loadTeacher">Returns a fresh instance of the same teacher on each call.</param>
    public static ToyDistillationReport Run(Func<StableDiffusionPipeline> loadTeacher, ToyRecognizer recognizer, string workDir,
        ToyDistillationOptions options, IReadOnlyList<DistillationVariant>? variants = null, Action<string>? log = null,
        CancellationToken cancellation = default)
    {
        var phases = new List<PhaseReport>();
        void Phase(string name, Stopwatch watch, string detail = "")
        {
            lock (phases) phases.Add(new PhaseReport(name, watch.Elapsed.TotalSeconds, detail));
            log?.Invoke($"{name}: {watch.Elapsed.TotalSeconds:F1} s {detail}");
            watch.Restart();
        }

        var watch = Stopwatch.StartNew();
        using var teacher = loadTeacher();
        var ddpm = new DDPMScheduler(ToyWorld.Schedule("DDPMScheduler"));
        using var data = ToyWorld.CreateDataset(options.DatasetSize, options.DatasetSeed, teacher.Tokenizer, teacher.Vae);
        Phase("dataset", watch, $"{data.Count} images");

        using var shard = TeacherTrajectories.Generate(teacher.Unet, teacher.Conditioner, ddpm, data,
            new TrajectoryOptions(options.TrajectoryCount, options.Seed, 50, options.GuidanceMin, options.GuidanceMax, 64), cancellation);
        Phase("trajectories", watch, $"{options.TrajectoryCount} samples");

        var metrics = new ToyRecognizerMetrics(recognizer);
        using var real = metrics.RealFeatures(options.RealImages, 5_000_001);
        var evaluator = new Evaluator(metrics, real, metrics);
        var prompts = ToyWorld.EvaluationPrompts(options.EvaluationPrompts);
        var evalOptions = new EvaluationOptions { Steps = options.Steps, Height = 32, Width = 32 };
        var rows = new List<EvaluationRow>();
        Directory.CreateDirectory(workDir);

        var teacherSamplers = SamplerSpec.Teacher(options.TeacherGuidance);
        foreach (var sampler in teacherSamplers)
            rows.AddRange(evaluator.Evaluate("teacher", teacher, prompts, sampler, evalOptions, Path.Combine(workDir, $"grid-teacher-{sampler.Name}.png")));
        rows.AddRange(evaluator.Evaluate("teacher", teacher, prompts, teacherSamplers[0], evalOptions with { Steps = [options.TeacherReferenceSteps] }));
        Phase("evaluate teacher", watch);

        var chosen = variants ?? options.Variants;
        var results = new (IReadOnlyList<EvaluationRow> Rows, IReadOnlyList<SegmentStageMetrics> Training)[chosen.Count];
        int threads = get_num_threads();
        if (options.Parallelism > 1) set_num_threads(1); // one core per variant beats two threads contending per op
        try
        {
            // the longest first (adversarial stages cost about twice as much), so no core idles at the end
            var longestFirst = Enumerable.Range(0, chosen.Count).OrderByDescending(i => chosen[i].Config.Stages
                .Sum(k => chosen[i].Config.StageFor(k) is var c && c.Weights.Adversarial > 0 ? 2 * c.Steps : c.Steps)).ToList();
            Parallel.ForEach(Partitioner.Create(longestFirst, EnumerablePartitionerOptions.NoBuffering),
                new ParallelOptions { MaxDegreeOfParallelism = options.Parallelism, CancellationToken = cancellation },
                i => results[i] = RunVariant(chosen[i]));
        }
        finally { set_num_threads(threads); }
        Phase($"train and evaluate {chosen.Count} variants ({Math.Min(options.Parallelism, chosen.Count)} at a time)", watch);

        (IReadOnlyList<EvaluationRow>, IReadOnlyList<SegmentStageMetrics>) RunVariant(DistillationVariant variant)
        {
            // LibTorch's OpenMP thread count is per OS thread: a pool thread would otherwise use every core.
            if (options.Parallelism > 1) set_num_threads(1);
            var variantWatch = Stopwatch.StartNew();
            StableDiffusionPipeline own;
            lock (loadTeacher) own = loadTeacher(); // a factory may seed the global RNG
            using var _ = own;
            var dir = Path.Combine(workDir, Slug(variant.Name));
            var stages = SegmentConsistencyTrainer.TrainStages(variant.Config, own.Unet, own.Conditioner, ddpm, [shard], dir,
                p => { if (p.Step % 100 == 0) log?.Invoke($"  {variant.Name} k={p.Segments} {p.Step}/{p.TotalSteps} loss {p.Losses.Consistency:G4}"); },
                cancellation);
            var training = stages.Select(r => r.Metrics).ToList();
            Phase($"train {variant.Name}", variantWatch, string.Join("; ", training.Select(m =>
                $"k={m.Segments}: {m.Steps} steps in {m.Steps / m.StepsPerSecond:F1} s ({m.StepsPerSecond:F2} steps/s), loss {m.InitialLoss:G4} → {m.FinalLoss:G4}")));
            var lora = stages[^1].Lora ?? throw new InvalidOperationException("the toy variants train LoRAs");
            lora.Attach(own.Unet);
            var variantRows = new List<EvaluationRow>();
            try
            {
                foreach (var sampler in new[] { SamplerSpec.DdimTrailing(), SamplerSpec.Tcd(0.3) })
                    variantRows.AddRange(evaluator.Evaluate(variant.Name, own, prompts, sampler, evalOptions,
                        Path.Combine(workDir, $"grid-{Slug(variant.Name)}-{sampler.Name}.png")));
            }
            finally
            {
                lora.Detach();
                foreach (var r in stages) r.Student.Dispose();
            }
            // Hyper-SD's fixed-step LoRAs: stage k's student samples k steps (DDIM trailing), one segment per step
            if (variant.Config.Stages.Count > 1)
                foreach (int k in variant.Config.Stages.Where(evalOptions.Steps.Contains))
                {
                    using var stageLora = LoraFormats.Load(SegmentConsistencyTrainer.StageLoraPath(dir, k), own.Unet);
                    stageLora.Attach(own.Unet);
                    try
                    {
                        variantRows.AddRange(evaluator.Evaluate(FixedStepName(variant.Name), own, prompts, SamplerSpec.DdimTrailing(),
                            evalOptions with { Steps = [k] }));
                    }
                    finally { stageLora.Detach(); }
                }
            Phase($"evaluate {variant.Name}", variantWatch);
            return (variantRows, training);
        }

        foreach (var r in results) rows.AddRange(r.Rows);
        return new ToyDistillationReport(rows, phases,
            chosen.Select((v, i) => (v.Name, results[i].Training)).ToDictionary(x => x.Name, x => x.Training));
    }

    /// <summary>The model name of a variant's fixed-step rows (stage k's LoRA at k steps).</summary>
    public static string FixedStepName(string variant) => $"{variant} stage-k LoRA at k steps";

    static string Slug(string name) => new(name.Select(c => char.IsLetterOrDigit(c) ? c : '-').ToArray());
}
