using System.Globalization;
using System.Text;
using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Metrics;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Toy;

public sealed record ToyAdherenceOptions
{
    /// <summary>Prompts per set (held-out and seen, one and two objects: four sets).</summary>
    public int Prompts { get; init; } = 128;
    public int Steps { get; init; } = 25;
    /// <summary>The teacher's sampler in the evaluation: plain DDIM with CFG 3 (<see cref="SamplerSpec.Teacher"/>).</summary>
    public SamplerSpec Sampler { get; init; } = SamplerSpec.Ddim(3.0);
    /// <summary>Seed of the prompts (each set draws its own from it) and of the noise (per prompt, as the evaluator does).</summary>
    public int Seed { get; init; } = 8_000_001;
    public int BatchSize { get; init; } = 64;
    /// <summary>Where to write one image grid per set (the first 16 prompts, 4× enlarged), or null.</summary>
    public string? GridDir { get; init; }
}

/// <summary>One prompt set's result: strict adherence (every requested object with shape, colour, position and size, and
/// nothing else) and, per requested object, how often the recognizer finds an object at its position and with each
/// attribute right there. <see cref="ShapeSwapped"/> and <see cref="ColorSwapped"/> (two objects) are the shares of requested
/// objects drawn with the other requested object's shape or colour where the two differ: attribute-binding errors, as
/// against an attribute that is simply wrong.</summary>
public sealed record ToyAdherenceRow(ToyCaptionSplit Split, int Objects, int Prompts, double Strict, double CountRight,
    double Placed, double Shape, double Color, double Size, double WholeObject, double ShapeSwapped = 0, double ColorSwapped = 0)
{
    /// <summary>Wilson 95 % interval of <see cref="Strict"/>.</summary>
    public (double Low, double High) StrictInterval
    {
        get
        {
            var e = WilsonInterval.Of((int)Math.Round(Strict * Prompts), Prompts);
            return (e.Low, e.High);
        }
    }
}

/// <summary>
/// How well a toy model follows its prompts, judged by the <see cref="ToyRecognizer"/>: strict adherence on held-out and
/// seen captions (<see cref="ToyCaptions"/>), one and two objects apart, with a per-attribute breakdown. Images are made
/// by the evaluator's own generation path (per-prompt seeds, the sampler's scheduler and CFG).
/// </summary>
public static class ToyAdherence
{
    public static IReadOnlyList<ToyAdherenceRow> Measure(IDiffusionPipeline pipeline, ToyRecognizer recognizer, ToyAdherenceOptions options,
        Action<string>? log = null)
    {
        var evaluator = new ModelEvaluator(null, null);
        var evalOptions = new EvaluationOptions { Steps = [options.Steps], Seed = options.Seed, BatchSize = options.BatchSize };
        var baseConfig = pipeline.Scheduler.Config;
        var rows = new List<ToyAdherenceRow>();
        try
        {
            foreach (var split in new[] { ToyCaptionSplit.HeldOut, ToyCaptionSplit.Train })
                foreach (int objects in new[] { 1, 2 })
                {
                    var prompts = ToyWorld.EvaluationPrompts(options.Prompts, objects, options.Seed + 10 * objects + (int)split, split);
                    pipeline.Scheduler = options.Sampler.Build(baseConfig);
                    using var images = evaluator.Generate(pipeline, prompts, options.Sampler, options.Steps, evalOptions);
                    var row = Score(split, objects, prompts, recognizer.Recognize(images));
                    rows.Add(row);
                    log?.Invoke(Line(row));
                    if (options.GridDir is not null)
                    {
                        Directory.CreateDirectory(options.GridDir);
                        // ×4 nearest, so that a 32×32 image can be looked at
                        using var large = nn.functional.interpolate(images[..Math.Min(16, prompts.Count)], scale_factor: [4.0, 4.0]);
                        using var grid = ImageFiles.Grid(large, columns: 8);
                        ImageFiles.SavePng(grid, Path.Combine(options.GridDir, $"{Name(split)}-{objects}obj.png"),
                            new Dictionary<string, string> { ["prompts"] = string.Join("\n", prompts.Take(16)) });
                    }
                }
        }
        finally { pipeline.Scheduler = HyperSd.Diffusion.Schedulers.SchedulerFactory.FromConfig(baseConfig); }
        return rows;
    }

    /// <summary>Scores recognised scenes against their prompts.</summary>
    public static ToyAdherenceRow Score(ToyCaptionSplit split, int objects, IReadOnlyList<string> prompts, IReadOnlyList<ToyScene> seen)
    {
        if (prompts.Count != seen.Count || prompts.Count == 0)
            throw new ArgumentException(
                $"expected one recognised scene per prompt and at least one prompt, got {prompts.Count} and {seen.Count}");
        int strict = 0, countRight = 0, requested = 0, placed = 0, shape = 0, color = 0, size = 0, whole = 0;
        int shapeSwapped = 0, colorSwapped = 0;
        for (int i = 0; i < prompts.Count; i++)
        {
            var requests = ToyShapes.ParseCaption(prompts[i]);
            if (PromptAdherence.Matches(requests, seen[i])) strict++;
            if (requests.Count == seen[i].Objects.Count) countRight++;
            foreach (var r in requests)
            {
                requested++;
                var there = seen[i].Objects.FirstOrDefault(o => o.Position == r.Position);
                if (there is null) continue;
                placed++;
                if (there.Shape == r.Shape) shape++;
                if (there.Color == r.Color) color++;
                if (r.Size is null || there.Size == r.Size) size++;
                if (r.IsMetBy(there, matchSize: true)) whole++;
                foreach (var other in requests.Where(o => o != r))
                {
                    if (other.Shape != r.Shape && there.Shape == other.Shape) shapeSwapped++;
                    if (other.Color != r.Color && there.Color == other.Color) colorSwapped++;
                }
            }
        }
        double n = prompts.Count, m = requested;
        return new(split, objects, prompts.Count, strict / n, countRight / n, placed / m, shape / m, color / m, size / m, whole / m,
            shapeSwapped / m, colorSwapped / m);
    }

    public static string Name(ToyCaptionSplit split) => split == ToyCaptionSplit.HeldOut ? "heldout" : "seen";

    public static string Line(ToyAdherenceRow r)
    {
        var (low, high) = r.StrictInterval;
        return string.Create(CultureInfo.InvariantCulture,
            $"{Name(r.Split),-8} {r.Objects} obj  n={r.Prompts}  strict {r.Strict:F3} [{low:F3}, {high:F3}]  count {r.CountRight:F3}  " +
            $"per object: placed {r.Placed:F3} shape {r.Shape:F3} colour {r.Color:F3} size {r.Size:F3} whole {r.WholeObject:F3}  " +
            $"swapped: shape {r.ShapeSwapped:F3} colour {r.ColorSwapped:F3}");
    }

    /// <summary>The rows as a markdown table.</summary>
    public static string ToMarkdown(IReadOnlyList<ToyAdherenceRow> rows)
    {
        var text = new StringBuilder("| captions | objects | prompts | strict adherence (95 % CI) | object count right | placed | " +
                                     "shape | colour | size | whole object | shape swapped | colour swapped |\n");
        text.Append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        foreach (var r in rows)
        {
            var (low, high) = r.StrictInterval;
            text.Append(string.Create(CultureInfo.InvariantCulture,
                $"| {Name(r.Split)} | {r.Objects} | {r.Prompts} | {r.Strict:F3} ({low:F3}–{high:F3}) | {r.CountRight:F3} | " +
                $"{r.Placed:F3} | " +
                $"{r.Shape:F3} | {r.Color:F3} | {r.Size:F3} | {r.WholeObject:F3} | {r.ShapeSwapped:F3} | {r.ColorSwapped:F3} |\n"));
        }
        return text.ToString();
    }
}
