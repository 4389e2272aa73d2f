using Cronos;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Schedules;

/// <summary>A schedule to create or replace: a recipe (a stored one by <see cref="RecipeId"/>, or its YAML/JSON text in
/// <see cref="Recipe"/>), a five-field cron expression and an IANA time zone.</summary>
public sealed record ScheduleRequest(string Name, Guid? RecipeId, string? Recipe, string Cron, string TimeZone,
    ScheduleOverlap Overlap = ScheduleOverlap.Skip, bool Enabled = true);

/// <param name="NextFiring">The next firing (UTC) while enabled.</param>
public sealed record ScheduleView(Guid Id, string Name, Guid RecipeId, string Cron, string TimeZone, bool Enabled, ScheduleOverlap Overlap,
    DateTimeOffset CreatedAt, DateTimeOffset? NextFiring);

public enum FiringOutcome { Started, SkippedOverlap, SkippedPaused, NoSuchSchedule }

public sealed record Firing(FiringOutcome Outcome, Guid? RunId);

/// <summary>Schedules for the API, the CLI and the job scheduler alike: validated changes, and a firing that submits a run
/// through <see cref="RunSubmission"/> unless the overlap policy says to skip it.</summary>
public sealed class ScheduleService(IDbContextFactory<MetadataDbContext> dbs, RunSubmission submission, StageCatalogue catalogue,
    WorkerOptions options, ILogger<ScheduleService> logger)
{
    /// <summary>The cron expression (minute hour day month weekday) and time zone, or an error naming the field.</summary>
    public static (CronExpression Cron, TimeZoneInfo Zone) Parse(string cron, string timeZone)
    {
        CronExpression expression;
        try
        {
            expression = CronExpression.Parse(cron, CronFormat.Standard);
        }
        catch (CronFormatException e)
        {
            throw new InvalidFieldException("cron", $"'{cron}' is not a five-field cron expression: {e.Message}");
        }
        try
        {
            return (expression, TimeZoneInfo.FindSystemTimeZoneById(timeZone));
        }
        catch (Exception e) when (e is TimeZoneNotFoundException or InvalidTimeZoneException or ArgumentException)
        {
            throw new InvalidFieldException("timeZone", $"'{timeZone}' is not a known IANA time zone (e.g. Europe/Berlin, UTC)");
        }
    }

    public static DateTimeOffset? Next(Schedule s, DateTimeOffset after)
    {
        if (!s.Enabled) return null;
        var (cron, zone) = Parse(s.Cron, s.TimeZone);
        return cron.GetNextOccurrence(after, zone);
    }

    static ScheduleView View(Schedule s) =>
        new(s.Id, s.Name, s.RecipeId, s.Cron, s.TimeZone, s.Enabled, s.Overlap, s.CreatedAt, Next(s, DateTimeOffset.UtcNow));

    public async Task<IReadOnlyList<ScheduleView>> ListAsync(CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        return [.. (await db.Schedules.AsNoTracking().OrderBy(s => s.Name).ToListAsync(ct)).Select(View)];
    }

    public async Task<ScheduleView> GetAsync(Guid id, CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        return View(await db.Schedules.AsNoTracking().SingleOrDefaultAsync(s => s.Id == id, ct) ?? throw new UnknownIdException("id", id,
            "schedule"));
    }

    /// <summary>Creates a schedule (<paramref name="id"/> null) or replaces one; checks everything before storing anything.</summary>
    public async Task<ScheduleView> SaveAsync(Guid? id, ScheduleRequest request, CancellationToken ct = default)
    {
        if (string.IsNullOrWhiteSpace(request.Name)) throw new InvalidFieldException("name", "a schedule needs a name");
        Parse(request.Cron, request.TimeZone);
        if ((request.RecipeId is null) == (request.Recipe is null))
            throw new InvalidFieldException("recipe", "give exactly one of recipeId (a stored recipe) and recipe (its text)");
        await using var db = await dbs.CreateDbContextAsync(ct);
        var schedule = id is { } existing
            ? await db.Schedules.SingleOrDefaultAsync(s => s.Id == existing, ct) ?? throw new UnknownIdException("id", existing, "schedule")
            : null;
        if (await db.Schedules.AnyAsync(s => s.Name == request.Name && s.Id != id, ct))
            throw new InvalidFieldException("name", $"a schedule named '{request.Name}' exists already");
        Guid recipeId;
        if (request.RecipeId is { } stored)
        {
            var recipe = await db.Recipes.AsNoTracking().SingleOrDefaultAsync(r => r.Id == stored, ct)
                ?? throw new UnknownIdException("recipeId", stored, "recipe");
            // a stored recipe may name files that have gone since: it must still plan
            RunSubmission.Plan(catalogue, recipe.Yaml, $"recipe {stored}", options.MaxAttempts);
            recipeId = stored;
        }
        else
        {
            var planned = RunSubmission.Plan(catalogue, request.Recipe!, "recipe", options.MaxAttempts);
            db.Recipes.Add(planned.Recipe);
            recipeId = planned.Recipe.Id;
        }
        if (schedule is null)
        {
            schedule = new Schedule
            {
                Id = Guid.NewGuid(), Name = request.Name, Cron = request.Cron, TimeZone = request.TimeZone,
                CreatedAt = DateTimeOffset.UtcNow,
            };
            db.Schedules.Add(schedule);
        }
        schedule.Name = request.Name;
        schedule.RecipeId = recipeId;
        schedule.Cron = request.Cron;
        schedule.TimeZone = request.TimeZone;
        schedule.Overlap = request.Overlap;
        schedule.Enabled = request.Enabled;
        await db.SaveChangesAsync(ct);
        return View(schedule);
    }

    /// <summary>Pauses (false) or resumes (true) a schedule.</summary>
    public async Task<ScheduleView> SetEnabledAsync(Guid id, bool enabled, CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var schedule = await db.Schedules.SingleOrDefaultAsync(s => s.Id == id, ct) ?? throw new UnknownIdException("id", id, "schedule");
        schedule.Enabled = enabled;
        await db.SaveChangesAsync(ct);
        return View(schedule);
    }

    /// <summary>Deletes a schedule; the runs it started stay, their schedule id cleared.</summary>
    public async Task DeleteAsync(Guid id, CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        if (await db.Schedules.Where(s => s.Id == id).ExecuteDeleteAsync(ct) == 0) throw new UnknownIdException("id", id, "schedule");
    }

    /// <summary>One firing at <paramref name="firedAt"/>: a run of the schedule's recipe that records the schedule and the
    /// firing, unless the schedule is paused or gone, or (overlap skip) a run it started is still pending or running.</summary>
    public async Task<Firing> FireAsync(Guid id, DateTimeOffset firedAt, CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var schedule = await db.Schedules.AsNoTracking().SingleOrDefaultAsync(s => s.Id == id, ct);
        if (schedule is null) return new Firing(FiringOutcome.NoSuchSchedule, null);
        if (!schedule.Enabled) return new Firing(FiringOutcome.SkippedPaused, null);
        if (schedule.Overlap == ScheduleOverlap.Skip &&
            await db.Runs.AnyAsync(r => r.ScheduleId == id && (r.State == RunState.Pending || r.State == RunState.Running), ct))
        {
            logger.LogInformation("schedule {Schedule}: firing at {FiredAt} skipped, its previous run is still active", schedule.Name,
                firedAt);
            return new Firing(FiringOutcome.SkippedOverlap, null);
        }
        var recipe = await db.Recipes.AsNoTracking().SingleAsync(r => r.Id == schedule.RecipeId, ct);
        var planned = RunSubmission.Plan(catalogue, recipe.Yaml, $"schedule {schedule.Name}", options.MaxAttempts);
        planned.Run.ScheduleId = id;
        planned.Run.ScheduledAt = firedAt;
        return new Firing(FiringOutcome.Started, await submission.SubmitAsync(planned, ct));
    }
}
