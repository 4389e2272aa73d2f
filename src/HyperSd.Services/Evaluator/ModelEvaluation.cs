using System.Text.Json;
using System.Text.Json.Serialization;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Metrics;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.Toy;
using HyperSd.Services.Execution;
using HyperSd.Services.Runs;
using static TorchSharp.torch;

namespace HyperSd.Services.Evaluator;

/// <summary>The prompts an evaluation uses and how its results name them: the toy world's held-out or seen captions, or a
/// prompts file's lines.</summary>
public sealed record PromptSet(string Description, IReadOnlyList<string> Prompts, ToyCaptionSplit? Split = null)
{
    /// <summary>Seed of the toy evaluation prompts (the recipe's and <c>hypersd evaluate</c>'s).</summary>
    public const int ToySeed = 7_000_001;

    public static PromptSet Toy(int count, ToyCaptionSplit split = ToyCaptionSplit.HeldOut, int seed = ToySeed) =>
        new($"{count} toy {ToyAdherence.Name(split)} captions (seed {seed})", ToyWorld.EvaluationPrompts(count, seed, split), split);

    public static PromptSet File(string name, IReadOnlyList<string> prompts) => new($"{prompts.Count} prompts of {name}", prompts);
}

/// <summary>
/// One evaluation: models made from one base pipeline (the teacher as is, with CFG; the untrained control; students and
/// LoRAs attached to it) generate one prompt set with the same per-prompt seeds, and are measured with the toy recognizer
/// (toy-FID and KID on its features against real renders of the same caption split, prompt adherence, and per-attribute
/// rates with <see cref="Breakdown"/>). Writes a grid per model and sampler, and results.md / results.json. The
/// evaluate-model stage and <c>hypersd evaluate</c> both measure through it, so their rows agree.
/// </summary>
public sealed class ModelEvaluation : IDisposable
{
    /// <summary>Seed of the real toy images whose features are the Fréchet reference (the floor's set draws from seed + 1).</summary>
    public const int RealImageSeed = 5_000_001;

    /// <summary>The untrained student's row name: the base with a LoRA at zero, i.e. the teacher without CFG on the
    /// student's samplers. Every distillation claim is read against it.</summary>
    public const string Untrained = "untrained";

    readonly IDiffusionPipeline pipeline;
    readonly ToyRecognizerMetrics? metrics, judgeMetrics;
    readonly Tensor? real, judgeReal;
    readonly ModelEvaluator evaluator;
    readonly int realImages;
    readonly int realSeed;

    public PromptSet Prompts { get; }
    public EvaluationOptions Options { get; }
    public string OutDir { get; }
    public List<EvaluationRow> Rows { get; } = [];
    public List<string> Grids { get; } = [];
    /// <summary>Called after each model and sampler with their names.</summary>
    public Action<string, string>? Evaluated { get; init; }
    public bool Measured => metrics is not null;
    /// <summary>The kept image sets, when the evaluation keeps them.</summary>
    public EvaluationSamples? Samples { get; }

    /// <param name="recognizer">The toy judge, or null at real scale (images and grids only, with the scorers' rows).</param>
    /// <param name="breakdown">Adds per-attribute rows (object found at its position, right shape, colour, size).</param>
    /// <param name="judge">A second recognizer that no reward used (<see cref="ToyJudge"/>): adds its adherence rows, and its
    /// Fréchet distance and KID (fd-judge, kid-judge) on its own features of the same real renders.</param>
    /// <param name="samplesDir">Keeps every image set there (<see cref="EvaluationSamples"/>) for scoring by another role.</param>
    /// <param name="realSeed">Seed of the real reference images (a re-draw takes another; the floor's set draws from seed + 1).
    /// </param>
    /// <param name="features">At real scale (no recognizer): the Fréchet distance's features (e.g. CLIP's), with
    /// <paramref name="realFeatures"/> (owned from here on) as its reference.</param>
    public ModelEvaluation(IDiffusionPipeline pipeline, ToyRecognizer? recognizer, PromptSet prompts, EvaluationOptions options,
        int realImages, string outDir, bool breakdown = false, IReadOnlyList<IImageScorer>? scorers = null, ToyRecognizer? judge = null,
        string? samplesDir = null, int realSeed = RealImageSeed, IImageFeatures? features = null, Tensor? realFeatures = null)
    {
        if (prompts.Prompts.Count == 0) throw new ArgumentException($"the prompt set ({prompts.Description}) is empty");
        this.pipeline = pipeline;
        this.realImages = realImages;
        this.realSeed = realSeed;
        Prompts = prompts;
        Options = options;
        OutDir = outDir;
        Directory.CreateDirectory(outDir);
        metrics = recognizer is null ? null : new ToyRecognizerMetrics(recognizer);
        real = metrics?.RealFeatures(realImages, realSeed, prompts.Split) ?? realFeatures;
        var all = (breakdown && recognizer is not null ? ToyAttributeScorer.All(recognizer) : []).Concat(scorers ?? []).ToList();
        Samples = samplesDir is null ? null : new EvaluationSamples(samplesDir, prompts.Prompts);
        judgeMetrics = judge is null ? null : new ToyRecognizerMetrics(judge);
        judgeReal = judgeMetrics?.RealFeatures(realImages, realSeed, prompts.Split);
        evaluator = new ModelEvaluator((IImageFeatures?)metrics ?? features, real, metrics, all,
            judgeMetrics is null ? null : new IndependentJudge(judgeMetrics, judgeMetrics, judgeReal!))
        {
            Generated = Samples is null ? null : Samples.Add, Control = Untrained,
        };
    }

    /// <summary>The base pipeline in its current state (LoRAs attached or not) under each sampler, at the evaluation's
    /// steps or at <paramref name="steps"/>, with a grid unless <paramref name="grid"/> is false.</summary>
    public void Evaluate(string model, IReadOnlyList<SamplerSpec> samplers, IReadOnlyList<int>? steps = null, bool grid = true) =>
        Evaluate(model, pipeline, samplers, steps, grid);

    /// <summary>A TSCD student (its LoRA attached for the call, or its full UNet copy).</summary>
    public void Evaluate(string model, SegmentStudent student, IReadOnlyList<SamplerSpec> samplers, IReadOnlyList<int>? steps = null)
    {
        var withStudent = StageModels.WithStudent(pipeline, student);
        try { Evaluate(model, withStudent, samplers, steps, grid: true); }
        finally { student.Lora?.Detach(); }
    }

    void Evaluate(string model, IDiffusionPipeline with, IReadOnlyList<SamplerSpec> samplers, IReadOnlyList<int>? steps, bool grid)
    {
        foreach (var sampler in samplers)
        {
            var options = steps is null ? Options : Options with { Steps = steps };
            var path = grid ? Path.Combine(OutDir, $"grid-{EvaluationSamples.FileName(model)}-{sampler.Name}.png") : null;
            Rows.AddRange(evaluator.Evaluate(model, with, Prompts.Prompts, sampler, options, path));
            if (path is not null) Grids.Add(path);
            Evaluated?.Invoke(model, steps is null ? sampler.Name : $"{sampler.Name}@{string.Join(",", steps)}");
        }
    }

    /// <summary>The untrained control: the base without CFG (a LoRA at zero) under the student's samplers.</summary>
    public void EvaluateUntrained(IReadOnlyList<SamplerSpec> studentSamplers) =>
        Evaluate(Untrained, studentSamplers.Select(s => s with { GuidanceScale = 1 }).ToList());

    /// <summary>Writes results.md (the table, the prompt set, the intervals and the Fréchet floor) and results.json; returns
    /// the two paths. At real scale, <paramref name="notMeasured"/> says why there are no rows, or <paramref name="measuredWith"/>
    /// names the weights and the reference set of the rows there are.</summary>
    public (string Markdown, string Json) WriteReport(string title, string? notMeasured = null, string? measuredWith = null)
    {
        double? floor = Measured ? Floor(metrics!) : null;
        double? judgeFloor = Measured && judgeMetrics is not null ? Floor(judgeMetrics) : null;
        var md = Path.Combine(OutDir, "results.md");
        var text = Measured
            ? $"# {title}\n\nPrompts: {Prompts.Description}; noise seed {Options.Seed} + prompt index; real images: {realImages}" +
              $"{(Prompts.Split is { } s ? $" renders of {ToyAdherence.Name(s)} captions" : "")}.\n\n" +
              EvaluationTable.Markdown(Rows) + "\nIntervals are 95 %: adherence and attribute rates Wilson's or Student's t, kid " +
              "±1.96 standard errors. fd has none on one image set; its floor, the distance between real image sets of these " +
              $"sizes ({Prompts.Prompts.Count} against {realImages}), is {EvaluationTable.Format("fd", floor!.Value)}" +
              (judgeFloor is { } jf ? $" ({ModelEvaluator.JudgeDistance}: {EvaluationTable.Format("fd", jf)}, on the features of the " +
                                      "judge that no reward used)" : "") + "." +
              (Rows.Any(r => r.Metric.EndsWith("-gain", StringComparison.Ordinal))
                  ? $" The -gain columns pair each prompt with the {Untrained} student's image at the same sampler and steps: the " +
                    "mean difference in adherence, with Student's t on the per-prompt differences; an interval above 0 means the " +
                    "model follows the prompts better than the control."
                  : "") + "\n"
            : measuredWith is not null
            ? $"# {title}\n\nPrompts: {Prompts.Description}; noise seed {Options.Seed} + prompt index. {measuredWith}\n\n" +
              EvaluationTable.Markdown(Rows) + "\nIntervals are 95 %: Student's t for per-image scores, kid ±1.96 standard errors; " +
              "fd has none on one image set.\n"
            : $"# {title}\n\n{notMeasured ?? "Not measured: no image feature model."} The image grids are:\n\n" +
              string.Join("\n", Grids.Select(g => $"- {Path.GetFileName(g)}")) + "\n";
        File.WriteAllText(md, text);
        var json = Path.Combine(OutDir, "results.json");
        File.WriteAllText(json, JsonSerializer.Serialize(new Report(title, Prompts.Description, Prompts.Split is { } split
            ? ToyAdherence.Name(split) : null, Prompts.Prompts.Count, Options.Seed, realImages, floor, judgeFloor, Rows,
            Grids.Select(Path.GetFileName).ToList()!), ReportJson));
        return (md, json);
    }

    static readonly JsonSerializerOptions ReportJson = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    sealed record Report(string Title, string Prompts, string? Split, int PromptCount, long Seed, int RealImages, double? FdFloor,
        double? FdJudgeFloor, IReadOnlyList<EvaluationRow> Rows, IReadOnlyList<string> Grids);

    /// <summary>The Fréchet distance between two real image sets of the evaluation's sizes (apart from the reference set).</summary>
    public double Floor() => Floor(metrics!);

    double Floor(ToyRecognizerMetrics by)
    {
        using var others = by.RealFeatures(Prompts.Prompts.Count + realImages, realSeed + 1, Prompts.Split);
        return FrechetDistance.RealVersusReal(others, Prompts.Prompts.Count, realImages);
    }

    public void Dispose()
    {
        real?.Dispose();
        judgeReal?.Dispose();
    }
}
