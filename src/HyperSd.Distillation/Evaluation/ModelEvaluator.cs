using System.Text.Json.Nodes;
using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Evaluation;

/// <summary>Features of images for the Fréchet distance (the toy recognizer's penultimate layer; at real scale any image model).</summary>
public interface IImageFeatures
{
    Tensor Features(Tensor images);

    /// <summary>The metric row's name: "fd" for the toy recognizer's features, "fd-clip" for CLIP image embeddings.</summary>
    string MetricName => "fd";
}

/// <summary>Does an image show what its prompt asks for (prompt adherence)?</summary>
public interface IPromptAdherence
{
    IReadOnlyList<bool> Matches(IReadOnlyList<string> prompts, Tensor images);
}

/// <summary>A second model that no reward used (the toy judge), by which a reward-trained model is judged: its adherence, and
/// its own features against the real images' for a Fréchet distance the reward cannot have taught the model to please
/// (<see cref="ModelEvaluator.JudgeDistance"/>).</summary>
public sealed record IndependentJudge(IPromptAdherence Adherence, IImageFeatures Features, Tensor RealFeatures);

/// <summary>A per-image score (reward models plug in here); its mean becomes a metric row named <see cref="Name"/>.</summary>
public interface IImageScorer
{
    string Name { get; }
    Tensor Score(IReadOnlyList<string> prompts, Tensor images);
}

/// <summary>A sampler to evaluate with: the scheduler class, its timestep spacing, eta (DDIM η / TCD γ) and CFG scale.</summary>
public sealed record SamplerSpec(
    string Name, string Scheduler, string? TimestepSpacing = null, double? Eta = null, double GuidanceScale = 1.0)
{
    /// <summary>Plain DDIM: the model's own scheduler config (SD1.5's leading spacing with steps_offset 1), η = 0.</summary>
    public static SamplerSpec Ddim(double guidance = 1.0) => new($"ddim{Cfg(guidance)}", "DDIMScheduler", null, 0, guidance);
    /// <summary>The teacher's samplers with CFG: plain DDIM (what the model ships with; its reference steps use this one),
    /// then DDIM with trailing spacing, which makes a many-step model much stronger at few steps.</summary>
    public static IReadOnlyList<SamplerSpec> Teacher(double guidance) => [Ddim(guidance), DdimTrailing(guidance)];
    public static SamplerSpec DdimTrailing(double guidance = 1.0) =>
        new($"ddim-trailing{Cfg(guidance)}", "DDIMScheduler", "trailing", 0, guidance);
    public static SamplerSpec Tcd(double eta, double guidance = 1.0) =>
        new($"tcd-eta{eta.ToString("0.##", System.Globalization.CultureInfo.InvariantCulture)}{Cfg(guidance)}",
            "TCDScheduler", null, eta, guidance);

    static string Cfg(double guidance) =>
        guidance > 1 ? $"-cfg{guidance.ToString("0.##", System.Globalization.CultureInfo.InvariantCulture)}" : "";

    public IScheduler Build(SchedulerConfig baseConfig)
    {
        var json = System.Text.Json.JsonSerializer.SerializeToNode(baseConfig, ModelConfig.Json)!.AsObject();
        if (TimestepSpacing is not null) json["timestep_spacing"] = TimestepSpacing;
        return SchedulerFactory.FromConfig(SchedulerConfig.FromJson(json, Scheduler, $"sampler {Name}"));
    }
}

/// <summary>One result row, ready for the metadata store's evaluations table.</summary>
/// <summary>One metric of a model at a step count, with its 95 % interval where the metric has one: adherence (Wilson),
/// KID (its standard error), per-image scores (Student's t on the images); the Fréchet distance has none on one image set
/// (see <see cref="Metrics.RedrawInterval"/>), and is read against its real-versus-real floor.</summary>
public sealed record EvaluationRow(string Model, string Sampler, int Steps, string Metric, double Value, double? Low = null,
    double? High = null)
{
    public EvaluationRow(string model, string sampler, int steps, string metric, Metrics.MetricEstimate estimate)
        : this(model, sampler, steps, metric, estimate.Value, estimate.Low, estimate.High)
    {
    }
}

public sealed record EvaluationOptions
{
    public IReadOnlyList<int> Steps { get; init; } = [1, 2, 4, 8];
    public int Height { get; init; } = 32;
    public int Width { get; init; } = 32;
    public long Seed { get; init; } = 1234;
    public int BatchSize { get; init; } = 64;
    /// <summary>Prompts shown in the image grid (rows); the first ones of the prompt set.</summary>
    public int GridPrompts { get; init; } = 8;
}

/// <summary>
/// Generates a held-out prompt set with a pipeline at several step counts and samplers, and measures the images:
/// Fréchet distance of their features to the real images' features, prompt adherence, and any per-image scores.
/// Seeds are fixed per prompt, so every model sees the same noise. Without <paramref name="features"/> it only makes the
/// images (and grids) and measures what the other metrics give.
/// </summary>
public sealed class ModelEvaluator(
    IImageFeatures? features, Tensor? realFeatures, IPromptAdherence? adherence = null, IReadOnlyList<IImageScorer>? scorers = null,
    IndependentJudge? judge = null)
{
    /// <summary>Called with each (model, sampler, steps) image set once it is measured, e.g. to keep the images.</summary>
    public Action<string, string, int, Tensor>? Generated { get; init; }

    /// <summary>The control model (the untrained student) that later models are paired with: every model sees the same
    /// prompts and noise, so a per-prompt difference in adherence to the control's images at the same sampler and steps has
    /// a far narrower interval than two separate adherence intervals (<see cref="GainMetricName"/> rows).</summary>
    public string? Control { get; init; }

    readonly Dictionary<(string Sampler, int Steps), IReadOnlyList<bool>> controlMatches = [];

    public IReadOnlyList<EvaluationRow> Evaluate(string model, IDiffusionPipeline pipeline, IReadOnlyList<string> prompts,
        SamplerSpec sampler, EvaluationOptions options, string? gridPath = null)
    {
        var rows = new List<EvaluationRow>();
        var baseConfig = pipeline.Scheduler.Config;
        var gridColumns = new List<Tensor>();
        try
        {
            foreach (int steps in options.Steps)
            {
                pipeline.Scheduler = sampler.Build(baseConfig);
                using var images = Generate(pipeline, prompts, sampler, steps, options);
                rows.AddRange(Measure(model, sampler.Name, steps, prompts, images));
                Generated?.Invoke(model, sampler.Name, steps, images);
                gridColumns.Add(images[..Math.Min(options.GridPrompts, prompts.Count)].clone());
            }
            if (gridPath is not null)
            {
                // Rows are prompts, columns step counts.
                using var grid = ImageFiles.Grid(stack(gridColumns, 1).flatten(0, 1), columns: gridColumns.Count);
                ImageFiles.SavePng(grid, gridPath, new Dictionary<string, string>
                {
                    ["model"] = model, ["sampler"] = sampler.Name, ["steps"] = string.Join(",", options.Steps),
                    ["prompts"] = string.Join("\n", prompts.Take(options.GridPrompts)),
                });
            }
        }
        finally
        {
            pipeline.Scheduler = SchedulerFactory.FromConfig(baseConfig);
            foreach (var c in gridColumns) c.Dispose();
        }
        return rows;
    }

    /// <summary>Adherence by the independent judge: the claims of a model trained on a reward rest on it.</summary>
    public const string JudgeAdherence = "adherence-judge";

    /// <summary>The Fréchet distance on the independent judge's features (KID beside it: "kid-judge").</summary>
    public const string JudgeDistance = "fd-judge";

    /// <summary>KID's row name beside the Fréchet distance's: "kid" for "fd", "kid-clip" for "fd-clip".</summary>
    public static string KidMetricName(IImageFeatures features) => KidMetricName(features.MetricName);

    static string KidMetricName(string fdName) => "kid" + fdName["fd".Length..];

    /// <summary>The paired adherence gain's row name: by the independent judge when there is one (claims rest on it), else by
    /// the recognizer.</summary>
    public string GainMetricName => (judge is not null ? JudgeAdherence : "adherence") + "-gain";

    public Tensor Generate(
        IDiffusionPipeline pipeline, IReadOnlyList<string> prompts, SamplerSpec sampler, int steps, EvaluationOptions options)
    {
        var parts = new List<Tensor>();
        for (int start = 0; start < prompts.Count; start += options.BatchSize)
        {
            var chunk = prompts.Skip(start).Take(options.BatchSize).ToList();
            var result = pipeline.Generate(new GenerationRequest
            {
                Prompts = chunk, Steps = steps, GuidanceScale = sampler.GuidanceScale, Eta = sampler.Eta,
                Height = options.Height, Width = options.Width,
                Seeds = chunk.Select((_, i) => options.Seed + start + i).ToList(),
            });
            parts.Add(result.Images);
        }
        var all = cat(parts);
        foreach (var p in parts) p.Dispose();
        return all;
    }

    public IEnumerable<EvaluationRow> Measure(string model, string sampler, int steps, IReadOnlyList<string> prompts, Tensor images)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var rows = new List<EvaluationRow>();
        if (features is not null)
            rows.AddRange(Distances(model, sampler, steps, features.MetricName, features.Features(images),
                realFeatures ?? throw new ArgumentException("the real images' features are needed with an image feature model")));
        if (judge is not null)
            rows.AddRange(Distances(model, sampler, steps, JudgeDistance, judge.Features.Features(images), judge.RealFeatures));
        IReadOnlyList<bool>? paired = null;
        if (adherence is not null)
        {
            var matches = paired = adherence.Matches(prompts, images);
            rows.Add(new(model, sampler, steps, "adherence", Metrics.WilsonInterval.Of(matches.Count(m => m), matches.Count)));
        }
        if (judge is not null)
        {
            var matches = paired = judge.Adherence.Matches(prompts, images);
            rows.Add(new(model, sampler, steps, JudgeAdherence, Metrics.WilsonInterval.Of(matches.Count(m => m), matches.Count)));
        }
        if (paired is not null && Control is not null)
        {
            if (model == Control) controlMatches[(sampler, steps)] = paired;
            else if (controlMatches.TryGetValue((sampler, steps), out var control) && control.Count == paired.Count)
                rows.Add(ScoreRow(model, sampler, steps, GainMetricName,
                    paired.Zip(control, (m, c) => (m ? 1.0 : 0.0) - (c ? 1.0 : 0.0)).ToList()));
        }
        foreach (var scorer in scorers ?? [])
        {
            var scores = scorer.Score(prompts, images).to(float64).cpu().data<double>().ToArray();
            rows.Add(ScoreRow(model, sampler, steps, scorer.Name, scores));
        }
        return rows;
    }

    /// <summary>The Fréchet distance of generated to real features, and KID beside it (unbiased, with a standard error from one
    /// image set).</summary>
    static IEnumerable<EvaluationRow> Distances(string model, string sampler, int steps, string fdName, Tensor generated, Tensor real)
    {
        yield return new(model, sampler, steps, fdName, Metrics.FrechetDistance.Compute(generated, real));
        yield return new(model, sampler, steps, KidMetricName(fdName), Metrics.KernelInceptionDistance.Compute(generated, real).Interval());
    }

    /// <summary>A per-image score's row: the mean over the images with Student's t interval (the images are independent
    /// draws).</summary>
    public static EvaluationRow ScoreRow(string model, string sampler, int steps, string metric, IReadOnlyList<double> scores) =>
        scores.Count >= 2 ? new(model, sampler, steps, metric, Metrics.RedrawInterval.Of(scores))
            : new(model, sampler, steps, metric, scores.Average());
}
