using HyperSd.Data;
using HyperSd.Data.Entities;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Runs;

/// <summary>A bad value of a named query or request field (paging, an unknown metric): the API answers it with a 400
/// naming <see cref="ArgumentException.ParamName"/>, the CLI prints the message.</summary>
public class InvalidFieldException(string field, string message) : ArgumentException($"{field}: {message}", field)
{
    /// <summary>Without ArgumentException's "(Parameter ...)" suffix: the message names the field already.</summary>
    public override string Message { get; } = $"{field}: {message}";
}

/// <summary>A field names a run (or other record) that the store does not hold: the API answers 404.</summary>
public sealed class UnknownIdException(string field, Guid id, string what = "run")
    : InvalidFieldException(field, $"no {what} {id} in the store");

/// <summary>A window of a longer result: <see cref="Total"/> rows matched, these start at <see cref="Offset"/>.</summary>
public sealed record Page<T>(IReadOnlyList<T> Items, int Total, int Offset, int Limit);

/// <summary>Which rows of a result, checked: a negative offset or a limit outside 1..<see cref="MaxLimit"/> is refused.</summary>
public sealed record Paging(int Offset = 0, int Limit = Paging.DefaultLimit)
{
    public const int DefaultLimit = 100;
    public const int MaxLimit = 10_000;

    public Paging Validate()
    {
        if (Offset < 0) throw new InvalidFieldException("offset", $"must be 0 or more, got {Offset}");
        if (Limit is < 1 or > MaxLimit) throw new InvalidFieldException("limit", $"must be between 1 and {MaxLimit}, got {Limit}");
        return this;
    }

    public async Task<Page<T>> ApplyAsync<T>(IQueryable<T> ordered, CancellationToken ct)
    {
        Validate();
        var total = await ordered.CountAsync(ct);
        return new Page<T>(await ordered.Skip(Offset).Take(Limit).ToListAsync(ct), total, Offset, Limit);
    }
}

/// <summary>Which runs to list; every filter optional. <see cref="Name"/> and <see cref="BaseModel"/> match exactly;
/// <see cref="From"/>/<see cref="To"/> bound the creation time (inclusive, exclusive).</summary>
public sealed record RunFilter(
    string? Name = null, RunState? State = null, string? BaseModel = null, DateTimeOffset? From = null, DateTimeOffset? To = null,
    Guid? Schedule = null);

/// <param name="ScheduleId">The schedule whose firing (at <paramref name="ScheduledAt"/>) started it; null if submitted by hand.</param>
public sealed record RunSummary(Guid Id, string Name, string BaseModel, RunState State, string? CurrentStage, string? Error,
    DateTimeOffset CreatedAt, DateTimeOffset? StartedAt, DateTimeOffset? FinishedAt, Guid? ScheduleId, DateTimeOffset? ScheduledAt)
{
    /// <summary>Start to end, or to now while it runs; null before it starts.</summary>
    public TimeSpan? Duration(DateTimeOffset now) => StartedAt is { } s ? (FinishedAt ?? now) - s : null;
}

public sealed record AttemptView(int Attempt, string Owner, DateTimeOffset StartedAt, DateTimeOffset? FinishedAt,
    AttemptOutcome? Outcome, string? Error);

/// <param name="Gap">From the previous stage's end (as its worker saw it) to this stage's start: orchestration overhead.</param>
/// <param name="ProgressDetail">The stage's own progress record (JSON, as its worker reported it).</param>
public sealed record StageView(string Name, int Index, string Kind, string Role, StageState State, int Attempt, int MaxAttempts,
    double Progress, string? ProgressDetail, DateTimeOffset? StartedAt, DateTimeOffset? FinishedAt, TimeSpan? Duration, TimeSpan? Gap,
    string? Error, IReadOnlyList<AttemptView> Attempts);

/// <param name="Inputs">Lineage: the artifacts this one was made from.</param>
public sealed record ArtifactView(Guid Id, ArtifactKind Kind, string Path, string Sha256, long SizeBytes, string? Stage,
    string? StageKind, int? Attempt, int? Segments, int? Steps, DateTimeOffset CreatedAt, IReadOnlyList<Guid> Inputs);

public sealed record RunDetails(RunSummary Run, Guid RecipeId, IReadOnlyList<StageView> Stages, IReadOnlyList<ArtifactView> Artifacts);

/// <summary>Reads runs for the CLI and the API alike: the list with its filters and paging, and one run whole.</summary>
public static class RunQueries
{
    static IQueryable<RunSummary> Summaries(IQueryable<Run> runs) => runs.Select(r => new RunSummary(r.Id, r.Name, r.BaseModel,
        r.State, r.CurrentStage, r.Error, r.CreatedAt, r.StartedAt, r.FinishedAt, r.ScheduleId, r.ScheduledAt));

    /// <summary>Runs matching <paramref name="filter"/>, newest first.</summary>
    public static Task<Page<RunSummary>> ListAsync(MetadataDbContext db, RunFilter filter, Paging paging, CancellationToken ct = default)
    {
        var runs = db.Runs.AsNoTracking();
        if (filter.Name is { } name) runs = runs.Where(r => r.Name == name);
        if (filter.State is { } state) runs = runs.Where(r => r.State == state);
        if (filter.BaseModel is { } model) runs = runs.Where(r => r.BaseModel == model);
        if (filter.From is { } from) runs = runs.Where(r => r.CreatedAt >= from);
        if (filter.To is { } to) runs = runs.Where(r => r.CreatedAt < to);
        if (filter.Schedule is { } schedule) runs = runs.Where(r => r.ScheduleId == schedule);
        return paging.ApplyAsync(Summaries(runs.OrderByDescending(r => r.CreatedAt).ThenBy(r => r.Id)), ct);
    }

    /// <summary>A run with its stages (attempts, progress, timings) and artifacts (with lineage); null if there is none.</summary>
    public static async Task<RunDetails?> ShowAsync(MetadataDbContext db, Guid runId, CancellationToken ct = default)
    {
        var run = await db.Runs.AsNoTracking().Include(r => r.Stages.OrderBy(s => s.Index)).ThenInclude(s => s.Attempts)
            .SingleOrDefaultAsync(r => r.Id == runId, ct);
        if (run is null) return null;
        var stages = new List<StageView>();
        DateTimeOffset? previousEnd = null;
        foreach (var s in run.Stages)
        {
            stages.Add(new StageView(s.Name, s.Index, s.Kind, s.Role, s.State, s.Attempt, s.MaxAttempts, s.Progress, s.ProgressDetail,
                s.StartedAt, s.FinishedAt, s.StartedAt is { } a && s.FinishedAt is { } b ? b - a : null,
                previousEnd is { } end && s.StartedAt is { } start ? start - end : null, s.Error,
                [.. s.Attempts.OrderBy(t => t.Attempt).Select(t => new AttemptView(t.Attempt, t.Owner, t.StartedAt, t.FinishedAt,
                    t.Outcome, t.Error))]));
            previousEnd = s.Attempts.Where(t => t.Outcome == AttemptOutcome.Succeeded).Select(t => t.FinishedAt).FirstOrDefault()
                          ?? s.FinishedAt;
        }
        var stageNames = run.Stages.ToDictionary(s => s.Id, s => s.Name);
        var artifacts = await db.Artifacts.AsNoTracking().Include(a => a.Inputs).Where(a => a.RunId == runId).ToListAsync(ct);
        var views = artifacts.OrderBy(a => a.CreatedAt).ThenBy(a => a.Path, StringComparer.Ordinal)
            .Select(a => new ArtifactView(a.Id, a.Kind, a.Path, a.Sha256, a.SizeBytes,
                a.StageId is { } sid ? stageNames.GetValueOrDefault(sid) : null, a.StageKind, a.Attempt, a.Segments, a.Steps, a.CreatedAt,
                [.. a.Inputs.Select(i => i.InputArtifactId)]))
            .ToList();
        var summary = new RunSummary(run.Id, run.Name, run.BaseModel, run.State, run.CurrentStage, run.Error, run.CreatedAt,
            run.StartedAt, run.FinishedAt, run.ScheduleId, run.ScheduledAt);
        return new RunDetails(summary, run.RecipeId, stages, views);
    }

    /// <summary>The stored artifact of the run at <paramref name="relativePath"/>, or the folder artifact that holds it (a
    /// file of a LoRA folder); null if neither. A path that climbs out ("..") or is rooted is refused.</summary>
    public static async Task<Artifact?> ArtifactHoldingAsync(MetadataDbContext db, Guid runId, string relativePath,
        CancellationToken ct = default)
    {
        var segments = relativePath.Replace('\\', '/').Split('/');
        if (relativePath.Length == 0 || Path.IsPathRooted(relativePath) || segments.Any(s => s is "" or "." or ".."))
            throw new InvalidFieldException("path",
                $"'{relativePath}' is not a path inside the artifact store (no '..', '.', empty or rooted parts)");
        var candidates = Enumerable.Range(1, segments.Length).Select(n => string.Join('/', segments[..n])).ToList();
        return await db.Artifacts.AsNoTracking().Where(a => a.RunId == runId && candidates.Contains(a.Path))
            .OrderByDescending(a => a.Path.Length).FirstOrDefaultAsync(ct);
    }
}
