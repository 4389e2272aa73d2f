using HyperSd.Data;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Runs;

public enum EvaluationSort { Created, Value, Steps, Metric, Run }

/// <summary>Which evaluation rows; every filter optional. <see cref="Runs"/>: any of these runs. <see cref="Recipe"/>: the
/// stored recipe's name; <see cref="BaseModel"/>: the run's teacher (<see cref="HyperSd.Data.Entities.Run.BaseModel"/>);
/// <see cref="Stage"/>: the evaluating stage's name; <see cref="Model"/>: the evaluated model (teacher, a TSCD stage's
/// LoRA). <see cref="From"/>/<see cref="To"/> bound the row's time (inclusive, exclusive). <see cref="Schedule"/>: runs its
/// firings started.</summary>
public sealed record EvaluationFilter(
    IReadOnlyList<Guid>? Runs = null, string? Recipe = null, string? BaseModel = null, string? Stage = null, string? Model = null,
    int? Steps = null, string? Sampler = null, string? Metric = null, DateTimeOffset? From = null, DateTimeOffset? To = null,
    Guid? Schedule = null);

/// <summary>One stored metric value with what it belongs to, and its 95 % interval where the metric has one.</summary>
public sealed record EvaluationRecord(Guid RunId, string Run, string Recipe, string BaseModel, string Stage, string Model,
    string Sampler, int Steps, string Metric, double Value, double? Low, double? High, DateTimeOffset CreatedAt);

public sealed record ComparedRun(Guid Id, string Name);

/// <summary>A value's 95 % interval.</summary>
public sealed record MetricInterval(double Low, double High);

/// <summary>One (model, sampler, metric, steps) cell of each compared run, in the runs' order (null: that run lacks it), with
/// each value's 95 % interval where the metric has one.</summary>
public sealed record ComparisonRow(string Model, string Sampler, string Metric, int Steps, IReadOnlyList<double?> Values,
    IReadOnlyList<MetricInterval?> Intervals)
{
    /// <summary>The run whose value is best and stands apart, if one does: none when fewer than two runs have a value, or
    /// when the best value (its interval, or the value alone where it has none) overlaps another run's. Two values without
    /// intervals overlap only when equal, so the Fréchet distance on one image set is ranked by value, a tie ranking none.</summary>
    public int? Best()
    {
        var present = Values.Select((v, i) => (Value: v, Index: i)).Where(x => x.Value is not null).ToList();
        if (present.Count < 2) return null;
        var best = EvaluationQueries.LowerIsBetter(Metric) ? present.MinBy(x => x.Value)! : present.MaxBy(x => x.Value)!;
        MetricInterval Range(int i) => Intervals[i] ?? new MetricInterval(Values[i]!.Value, Values[i]!.Value);
        var b = Range(best.Index);
        return present.Any(x => x.Index != best.Index && Range(x.Index).Low <= b.High && b.Low <= Range(x.Index).High)
            ? null : best.Index;
    }
}

public sealed record RunComparison(IReadOnlyList<ComparedRun> Runs, IReadOnlyList<ComparisonRow> Rows);

/// <summary>The run with the best value of <see cref="Metric"/> at <see cref="Steps"/> among the matching rows, the model and
/// sampler that reached it, and the value's 95 % interval where the metric has one. <see cref="Overlapping"/>: how many other
/// matching rows at this metric and steps overlap it (their intervals, or their values where they have none, against its
/// interval, or its value) out of the <see cref="Others"/> there are: none of several means it stands apart; otherwise the
/// data do not support ranking it above those.</summary>
public sealed record BestRun(string Metric, int Steps, bool LowerIsBetter, Guid RunId, string Run, string Model, string Sampler,
    double Value, double? Low = null, double? High = null, int Overlapping = 0, int Others = 0)
{
    public bool StandsApart => Others > 0 && Overlapping == 0;
}

/// <summary>Evaluation rows across runs for the API and the CLI: the filtered query, runs side by side, the best run.</summary>
public static class EvaluationQueries
{
    /// <summary>Distances (fd, fd-clip: Fréchet distances; kid, kid-clip) are better low; every other metric (adherence,
    /// scores) high.</summary>
    public static bool LowerIsBetter(string metric) =>
        metric is "fd" or "kid" || metric.StartsWith("fd-", StringComparison.Ordinal)
                                || metric.StartsWith("kid-", StringComparison.Ordinal);

    /// <summary>The metrics in display order: distances first, then adherence, then the rest by name.</summary>
    public static IOrderedEnumerable<string> InDisplayOrder(IEnumerable<string> metrics) =>
        metrics.OrderBy(m => m switch { "fd" => 0, "kid" => 1, "adherence" => 2, _ => 3 }).ThenBy(m => m, StringComparer.Ordinal);

    // Initialized by members, not a constructor: EF composes filters and orderings on members it assigned.
    sealed class Joined
    {
        public Guid RunId { get; init; }
        public Guid? ScheduleId { get; init; }
        public string Run { get; init; } = "";
        public string Recipe { get; init; } = "";
        public string BaseModel { get; init; } = "";
        public string Stage { get; init; } = "";
        public string Model { get; init; } = "";
        public string Sampler { get; init; } = "";
        public int Steps { get; init; }
        public string Metric { get; init; } = "";
        public double Value { get; init; }
        public double? Low { get; init; }
        public double? High { get; init; }
        public DateTimeOffset CreatedAt { get; init; }
    }

    /// <summary>The rows matching <paramref name="filter"/>, checked first (an unknown metric or sampler, steps below 1, an
    /// empty date range are refused, naming the field).</summary>
    static async Task<IQueryable<Joined>> MatchingAsync(MetadataDbContext db, EvaluationFilter filter, CancellationToken ct)
    {
        if (filter.Steps is < 1) throw new InvalidFieldException("steps", $"must be 1 or more, got {filter.Steps}");
        if (filter.From is { } f && filter.To is { } t && f >= t)
            throw new InvalidFieldException("from", $"the range's start ({f:O}) must be before its end ({t:O})");
        if (filter.Metric is { } metric && !await db.Evaluations.AnyAsync(v => v.Metric == metric, ct))
            throw new InvalidFieldException("metric", $"unknown metric '{metric}'; the store has " +
                Known(InDisplayOrder(await db.Evaluations.Select(v => v.Metric).Distinct().ToListAsync(ct))));
        if (filter.Sampler is { } sampler && !await db.Evaluations.AnyAsync(v => v.Sampler == sampler, ct))
            throw new InvalidFieldException("sampler", $"unknown sampler '{sampler}'; the store has " +
                Known((await db.Evaluations.Select(v => v.Sampler).Distinct().ToListAsync(ct)).Order(StringComparer.Ordinal)));

        var rows = from v in db.Evaluations.AsNoTracking()
            join r in db.Runs on v.RunId equals r.Id
            join s in db.Stages on v.StageId equals s.Id
            join p in db.Recipes on r.RecipeId equals p.Id
            select new Joined
            {
                RunId = v.RunId, ScheduleId = r.ScheduleId, Run = r.Name, Recipe = p.Name, BaseModel = r.BaseModel, Stage = s.Name,
                Model = v.Model, Sampler = v.Sampler, Steps = v.Steps, Metric = v.Metric, Value = v.Value, Low = v.Low, High = v.High,
                CreatedAt = v.CreatedAt,
            };
        if (filter.Runs is { Count: > 0 } runs) rows = rows.Where(x => runs.Contains(x.RunId));
        if (filter.Recipe is { } recipe) rows = rows.Where(x => x.Recipe == recipe);
        if (filter.BaseModel is { } baseModel) rows = rows.Where(x => x.BaseModel == baseModel);
        if (filter.Stage is { } stage) rows = rows.Where(x => x.Stage == stage);
        if (filter.Model is { } model) rows = rows.Where(x => x.Model == model);
        if (filter.Steps is { } steps) rows = rows.Where(x => x.Steps == steps);
        if (filter.Sampler is { } samplerName) rows = rows.Where(x => x.Sampler == samplerName);
        if (filter.Metric is { } metricName) rows = rows.Where(x => x.Metric == metricName);
        if (filter.From is { } from) rows = rows.Where(x => x.CreatedAt >= from);
        if (filter.To is { } to) rows = rows.Where(x => x.CreatedAt < to);
        if (filter.Schedule is { } schedule) rows = rows.Where(x => x.ScheduleId == schedule);
        return rows;
    }

    static string Known(IEnumerable<string> names) => names.Any() ? string.Join(", ", names) : "no evaluation rows yet";

    /// <summary>The matching rows, sorted (ties in a stable order) and paged.</summary>
    public static async Task<Page<EvaluationRecord>> QueryAsync(MetadataDbContext db, EvaluationFilter filter, Paging paging,
        EvaluationSort sort = EvaluationSort.Created, bool descending = false, CancellationToken ct = default)
    {
        paging.Validate();
        var rows = await MatchingAsync(db, filter, ct);
        IOrderedQueryable<Joined> sorted = (sort, descending) switch
        {
            (EvaluationSort.Value, false) => rows.OrderBy(x => x.Value),
            (EvaluationSort.Value, true) => rows.OrderByDescending(x => x.Value),
            (EvaluationSort.Steps, false) => rows.OrderBy(x => x.Steps),
            (EvaluationSort.Steps, true) => rows.OrderByDescending(x => x.Steps),
            (EvaluationSort.Metric, false) => rows.OrderBy(x => x.Metric),
            (EvaluationSort.Metric, true) => rows.OrderByDescending(x => x.Metric),
            (EvaluationSort.Run, false) => rows.OrderBy(x => x.Run),
            (EvaluationSort.Run, true) => rows.OrderByDescending(x => x.Run),
            (_, false) => rows.OrderBy(x => x.CreatedAt),
            (_, true) => rows.OrderByDescending(x => x.CreatedAt),
        };
        var ordered = sorted.ThenBy(x => x.RunId).ThenBy(x => x.Model).ThenBy(x => x.Sampler).ThenBy(x => x.Metric).ThenBy(x => x.Steps)
            .Select(x => new EvaluationRecord(x.RunId, x.Run, x.Recipe, x.BaseModel, x.Stage, x.Model, x.Sampler, x.Steps, x.Metric,
                x.Value, x.Low, x.High, x.CreatedAt));
        return await paging.ApplyAsync(ordered, ct);
    }

    /// <summary>The runs side by side: a row per (model, sampler, metric, steps) any of them has, a value per run.
    /// <paramref name="filter"/>'s other fields narrow the rows (its <see cref="EvaluationFilter.Runs"/> is replaced).</summary>
    public static async Task<RunComparison> CompareAsync(MetadataDbContext db, IReadOnlyList<Guid> runIds, EvaluationFilter filter,
        CancellationToken ct = default)
    {
        if (runIds.Count == 0) throw new InvalidFieldException("runs", "name at least one run");
        var names = await db.Runs.AsNoTracking().Where(r => runIds.Contains(r.Id)).ToDictionaryAsync(r => r.Id, r => r.Name, ct);
        if (runIds.FirstOrDefault(id => !names.ContainsKey(id)) is var missing && missing != Guid.Empty)
            throw new UnknownIdException("runs", missing);
        var rows = await (await MatchingAsync(db, filter with { Runs = runIds }, ct)).ToListAsync(ct);
        var metricOrder = InDisplayOrder(rows.Select(r => r.Metric).Distinct()).ToList();
        var compared = rows.GroupBy(r => (r.Model, r.Sampler, r.Metric, r.Steps))
            .OrderBy(g => metricOrder.IndexOf(g.Key.Metric)).ThenBy(g => g.Key.Model, StringComparer.Ordinal)
            .ThenBy(g => g.Key.Sampler, StringComparer.Ordinal).ThenBy(g => g.Key.Steps)
            .Select(g => new ComparisonRow(g.Key.Model, g.Key.Sampler, g.Key.Metric, g.Key.Steps,
                [.. runIds.Select(id => g.FirstOrDefault(r => r.RunId == id)?.Value)],
                [.. runIds.Select(id => g.FirstOrDefault(r => r.RunId == id) is { Low: { } low, High: { } high }
                    ? new MetricInterval(low, high) : null)]))
            .ToList();
        return new RunComparison([.. runIds.Distinct().Select(id => new ComparedRun(id, names[id]))], compared);
    }

    /// <summary>For each (metric, steps) among the matching rows, the row with the best value (ties: the earliest row), and how
    /// many other rows overlap it. The store finds each group's extremes, then the rows that hold them, then counts each
    /// best's overlapping rows: only counts and the best rows travel, not every matching row.</summary>
    public static async Task<IReadOnlyList<BestRun>> BestAsync(MetadataDbContext db, EvaluationFilter filter,
        CancellationToken ct = default)
    {
        var rows = await MatchingAsync(db, filter, ct);
        var groups = await rows.GroupBy(r => new { r.Metric, r.Steps })
            .Select(g => new { g.Key.Metric, g.Key.Steps, Min = g.Min(r => r.Value), Max = g.Max(r => r.Value), Count = g.Count() })
            .ToListAsync(ct);
        var targets = groups
            .Select(g => (g.Metric, g.Steps, Lower: LowerIsBetter(g.Metric), Value: LowerIsBetter(g.Metric) ? g.Min : g.Max, g.Count))
            .ToList();
        var values = targets.Select(t => t.Value).Distinct().ToList();
        var holders = await rows.Where(r => values.Contains(r.Value)).ToListAsync(ct);
        var metricOrder = InDisplayOrder(targets.Select(t => t.Metric).Distinct()).ToList();
        var result = new List<BestRun>();
        foreach (var t in targets.OrderBy(t => metricOrder.IndexOf(t.Metric)).ThenBy(t => t.Steps))
        {
            var best = holders.Where(r => r.Metric == t.Metric && r.Steps == t.Steps && r.Value == t.Value)
                .OrderBy(r => r.CreatedAt).ThenBy(r => r.RunId).First();
            double low = best.Low ?? best.Value, high = best.High ?? best.Value;
            int overlapping = await rows.CountAsync(r => r.Metric == t.Metric && r.Steps == t.Steps
                && !(r.RunId == best.RunId && r.Model == best.Model && r.Sampler == best.Sampler)
                && (r.Low ?? r.Value) <= high && (r.High ?? r.Value) >= low, ct);
            result.Add(new BestRun(t.Metric, t.Steps, t.Lower, best.RunId, best.Run, best.Model, best.Sampler, best.Value,
                best.Low, best.High, overlapping, t.Count - 1));
        }
        return result;
    }
}
