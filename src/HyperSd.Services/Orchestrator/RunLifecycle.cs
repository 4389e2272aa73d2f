using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Orchestrator;

/// <summary>A command to send to a role's queue once the state that made it is committed.</summary>
public sealed record StageDispatch(string Role, RunStage Command);

/// <summary>
/// A run's state machine in the metadata store. Every transition commits first and returns the commands to send after;
/// a crash in between leaves a Dispatched stage that <see cref="ReconcileAsync"/> sends again, and workers ignore a
/// command whose (stage, attempt) is not the current Dispatched one, so sending twice is harmless. Events are matched
/// on (stage, attempt) and state, so a duplicate or stale event changes nothing.
/// </summary>
public sealed class RunLifecycle(IDbContextFactory<MetadataDbContext> dbs, StageCatalogue catalogue, WorkerOptions options,
    ILogger<RunLifecycle> logger)
{
    public Task<IReadOnlyList<StageDispatch>> StartAsync(Guid runId, DateTimeOffset now, CancellationToken ct = default) =>
        Transition(runId, ct, (db, run) =>
        {
            if (run.State != RunState.Pending) return Task.FromResult(None);
            run.State = RunState.Running;
            run.StartedAt = now;
            logger.LogInformation("run {RunId} ({Name}) started", run.Id, run.Name);
            return DispatchNext(db, run, now);
        });

    public Task<IReadOnlyList<StageDispatch>> StageCompletedAsync(StageCompleted e, DateTimeOffset now, CancellationToken ct = default) =>
        Transition(e.RunId, ct, (db, run) =>
        {
            var stage = Current(run, e.StageId, e.Attempt, StageState.Running);
            if (stage is null || run.State != RunState.Running) return Task.FromResult(None);
            return Succeed(db, run, stage, now);
        });

    /// <summary>The stage's outputs are in the store (the next stage's inputs are looked up there, not taken from the
    /// event): mark it succeeded and dispatch the next one.</summary>
    Task<IReadOnlyList<StageDispatch>> Succeed(MetadataDbContext db, Run run, Stage stage, DateTimeOffset now)
    {
        stage.State = StageState.Succeeded;
        stage.FinishedAt = now;
        stage.Progress = 1;
        stage.LeaseOwner = null;
        stage.Error = null;
        logger.LogInformation("run {RunId}: stage {Stage} attempt {Attempt} succeeded", run.Id, stage.Name, stage.Attempt);
        return DispatchNext(db, run, now);
    }

    public Task<IReadOnlyList<StageDispatch>> StageFailedAsync(StageFailed e, DateTimeOffset now, CancellationToken ct = default) =>
        Transition(e.RunId, ct, (_, run) =>
        {
            var stage = Current(run, e.StageId, e.Attempt, StageState.Running, StageState.Dispatched);
            if (stage is null || run.State != RunState.Running) return Task.FromResult(None);
            stage.LeaseOwner = null;
            stage.Error = e.Error;
            if (e.Transient && stage.Attempt < stage.MaxAttempts)
            {
                stage.State = StageState.Pending;
                stage.NextAttemptAt = now + Backoff(stage.Attempt);
                logger.LogWarning("run {RunId}: stage {Stage} attempt {Attempt} failed (transient), retry at {NextAttemptAt}: {Error}",
                    run.Id, stage.Name, stage.Attempt, stage.NextAttemptAt, e.Error);
            }
            else
                Fail(run, stage, now, e.Transient ? $"{e.Error} (after {stage.Attempt} attempts)" : e.Error);
            return Task.FromResult(None);
        });

    /// <summary>A worker's consumer threw on the command (MassTransit moved it to the error queue).</summary>
    public Task<IReadOnlyList<StageDispatch>> StageFaultedAsync(
        IStageCommand command, string error, DateTimeOffset now, CancellationToken ct = default) =>
        Transition(command.RunId, ct, (_, run) =>
        {
            var stage = Current(run, command.StageId, command.Attempt, StageState.Dispatched, StageState.Running);
            if (stage is null || run.State != RunState.Running) return Task.FromResult(None);
            stage.LeaseOwner = null;
            Fail(run, stage, now, error);
            return Task.FromResult(None);
        });

    public Task<IReadOnlyList<StageDispatch>> CancelAsync(Guid runId, string? reason, DateTimeOffset now, CancellationToken ct = default) =>
        Transition(runId, ct, (_, run) =>
        {
            if (run.State is not (RunState.Pending or RunState.Running)) return Task.FromResult(None);
            run.State = RunState.Cancelled;
            run.FinishedAt = now;
            run.Error = reason;
            foreach (var stage in run.Stages.Where(s => s.State is StageState.Pending or StageState.Dispatched or StageState.Running))
            {
                stage.State = StageState.Cancelled;
                stage.FinishedAt = now;
                stage.NextAttemptAt = null;
            }
            logger.LogInformation("run {RunId} cancelled{Reason}", run.Id, reason is null ? "" : $": {reason}");
            return Task.FromResult(None);
        });

    /// <summary>A failed or cancelled run runs again from its first unfinished stage, with a new attempt and a fresh
    /// retry budget (a training stage resumes from its last checkpoint).</summary>
    public Task<IReadOnlyList<StageDispatch>> ResumeAsync(Guid runId, DateTimeOffset now, CancellationToken ct = default) =>
        Transition(runId, ct, (db, run) =>
        {
            if (run.State is not (RunState.Failed or RunState.Cancelled)) return Task.FromResult(None);
            run.State = RunState.Running;
            run.Error = null;
            run.FinishedAt = null;
            foreach (var stage in run.Stages.Where(s => s.State != StageState.Succeeded))
            {
                stage.State = StageState.Pending;
                stage.FinishedAt = null;
                stage.NextAttemptAt = null;
                stage.Error = null;
                stage.MaxAttempts = stage.Attempt + options.MaxAttempts;
            }
            logger.LogInformation("run {RunId} resumed", run.Id);
            return DispatchNext(db, run, now);
        });

    /// <summary>
    /// Repairs what messages alone cannot: sends again the command of a stage dispatched but not leased within the
    /// dispatch timeout (lost message, busy device), re-dispatches a running stage whose heartbeat is older than the
    /// lease timeout (dead worker) or completes it when its attempt is recorded as succeeded (late or lost event), and
    /// dispatches a pending stage whose retry backoff has elapsed.
    /// </summary>
    public async Task<IReadOnlyList<StageDispatch>> ReconcileAsync(DateTimeOffset now, CancellationToken ct = default)
    {
        List<Guid> runIds;
        await using (var db = await dbs.CreateDbContextAsync(ct))
            runIds = await db.Runs.Where(r => r.State == RunState.Running).Select(r => r.Id).ToListAsync(ct);
        var dispatches = new List<StageDispatch>();
        foreach (var runId in runIds)
        {
            try
            {
                dispatches.AddRange(await Transition(runId, ct, (db, run) => ReconcileRun(db, run, now)));
            }
            catch (DbUpdateConcurrencyException)
            {
                // A consumer changed the run meanwhile; look again next round.
            }
        }
        return dispatches;
    }

    async Task<IReadOnlyList<StageDispatch>> ReconcileRun(MetadataDbContext db, Run run, DateTimeOffset now)
    {
        if (run.State != RunState.Running) return None;
        var result = new List<StageDispatch>();
        foreach (var stage in run.Stages.OrderBy(s => s.Index))
        {
            switch (stage.State)
            {
                case StageState.Dispatched when stage.DispatchedAt < now - options.DispatchTimeout:
                    logger.LogWarning("run {RunId}: stage {Stage} attempt {Attempt} not leased since {DispatchedAt}; sending again",
                        run.Id, stage.Name, stage.Attempt, stage.DispatchedAt);
                    stage.DispatchedAt = now;
                    result.Add(await CommandAsync(db, run, stage));
                    break;
                case StageState.Running when (stage.LeaseHeartbeatAt ?? stage.StartedAt) < now - options.LeaseTimeout:
                    var attempt = await db.StageAttempts.SingleOrDefaultAsync(a => a.StageId == stage.Id && a.Attempt == stage.Attempt);
                    if (attempt is { Outcome: AttemptOutcome.Succeeded })
                    {
                        // The worker stored its outputs and finished, then its event was delayed (the orchestrator
                        // away from the broker) or lost: running the stage again would only repeat the work.
                        logger.LogWarning("run {RunId}: stage {Stage} attempt {Attempt} finished at {FinishedAt} but its event has not " +
                                          "arrived; completing it from the store", run.Id, stage.Name, stage.Attempt, attempt.FinishedAt);
                        result.AddRange(await Succeed(db, run, stage, now));
                        break;
                    }
                    logger.LogWarning(
                        "run {RunId}: stage {Stage} attempt {Attempt} lost its lease (owner {Owner}, last heartbeat {Heartbeat})",
                        run.Id, stage.Name, stage.Attempt, stage.LeaseOwner, stage.LeaseHeartbeatAt);
                    if (attempt is { Outcome: null })
                    {
                        attempt.Outcome = AttemptOutcome.Lost;
                        attempt.FinishedAt = now;
                    }
                    stage.LeaseOwner = null;
                    if (stage.Attempt < stage.MaxAttempts)
                        result.AddRange(await Dispatch(db, run, stage, now));
                    else
                        Fail(run, stage, now, $"lease lost (no heartbeat since {stage.LeaseHeartbeatAt:O}) after {stage.Attempt} attempts");
                    break;
                case StageState.Pending when stage.NextAttemptAt is { } at && at <= now:
                    result.AddRange(await Dispatch(db, run, stage, now));
                    break;
            }
        }
        return result;
    }

    static readonly IReadOnlyList<StageDispatch> None = [];

    TimeSpan Backoff(int attempt) =>
        TimeSpan.FromTicks(Math.Min(options.RetryBackoff.Ticks * (1L << Math.Min(attempt - 1, 20)), TimeSpan.FromHours(1).Ticks));

    /// <summary>The stage if it is at <paramref name="attempt"/> in one of <paramref name="states"/>; else null (stale).</summary>
    Stage? Current(Run run, Guid stageId, int attempt, params StageState[] states)
    {
        var stage = run.Stages.SingleOrDefault(s => s.Id == stageId);
        if (stage is not null && stage.Attempt == attempt && states.Contains(stage.State)) return stage;
        logger.LogInformation("run {RunId}: ignoring a message for stage {StageId} attempt {Attempt} (now {State} at attempt {Current})",
            run.Id, stageId, attempt, stage?.State, stage?.Attempt);
        return null;
    }

    void Fail(Run run, Stage stage, DateTimeOffset now, string error)
    {
        stage.State = StageState.Failed;
        stage.FinishedAt = now;
        stage.Error = error;
        stage.NextAttemptAt = null;
        run.State = RunState.Failed;
        run.FinishedAt = now;
        run.Error = $"stage {stage.Name}: {error}";
        logger.LogError("run {RunId} failed in stage {Stage} attempt {Attempt}: {Error}", run.Id, stage.Name, stage.Attempt, error);
    }

    /// <summary>Dispatches the first stage not yet succeeded, or finishes the run when none is left.</summary>
    async Task<IReadOnlyList<StageDispatch>> DispatchNext(MetadataDbContext db, Run run, DateTimeOffset now)
    {
        var next = run.Stages.OrderBy(s => s.Index).FirstOrDefault(s => s.State != StageState.Succeeded);
        if (next is null)
        {
            run.State = RunState.Succeeded;
            run.FinishedAt = now;
            run.CurrentStage = null;
            logger.LogInformation("run {RunId} succeeded", run.Id);
            return None;
        }
        if (next.State != StageState.Pending) return None;
        return await Dispatch(db, run, next, now);
    }

    /// <summary>The stage's next attempt; none, and the run fails, when its kind finds no usable inputs among the run's outputs.</summary>
    async Task<IReadOnlyList<StageDispatch>> Dispatch(MetadataDbContext db, Run run, Stage stage, DateTimeOffset now)
    {
        stage.Attempt++;
        stage.State = StageState.Dispatched;
        stage.DispatchedAt = now;
        stage.NextAttemptAt = null;
        stage.LeaseOwner = null;
        stage.LeaseHeartbeatAt = null;
        stage.LeaseExpiresAt = null;
        stage.Progress = 0;
        stage.ProgressDetail = null;
        run.CurrentStage = stage.Name;
        logger.LogInformation("run {RunId}: dispatching stage {Stage} attempt {Attempt} to {Role}",
            run.Id, stage.Name, stage.Attempt, stage.Role);
        try
        {
            return [await CommandAsync(db, run, stage)];
        }
        catch (InvalidDataException e)
        {
            Fail(run, stage, now, $"no inputs: {e.Message}");
            return None;
        }
    }

    /// <summary>The command of a stage's current attempt, as the orchestrator sends it (tests re-send it as a duplicate).</summary>
    public async Task<RunStage> CurrentCommandAsync(Guid runId, string stageName, CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var run = await db.Runs.AsNoTracking().Include(r => r.Stages).SingleAsync(r => r.Id == runId, ct);
        return (await CommandAsync(db, run, run.Stages.Single(s => s.Name == stageName))).Command;
    }

    /// <summary>The command for the stage's current attempt, with the inputs its kind chooses among the outputs of the
    /// run's earlier succeeded stages (their current attempts; checkpoints are never inputs).</summary>
    async Task<StageDispatch> CommandAsync(MetadataDbContext db, Run run, Stage stage)
    {
        var kind = catalogue.Get(stage.Kind);
        var earlier = run.Stages.Where(s => s.Index < stage.Index && s.State == StageState.Succeeded).ToDictionary(s => s.Id);
        var artifacts = await db.Artifacts.AsNoTracking().Where(a => a.RunId == run.Id && a.Kind != ArtifactKind.Checkpoint).ToListAsync();
        var outputs = artifacts
            .Where(a => a.StageId is { } id && earlier.TryGetValue(id, out var s) && a.Attempt == s.Attempt)
            .Select(a => new StageOutput(earlier[a.StageId!.Value], a))
            .OrderBy(o => o.Stage.Index).ThenBy(o => o.Artifact.Path, StringComparer.Ordinal).ToList();
        var inputs = kind.SelectInputs(catalogue.ReadSettings(stage), outputs).Select(a => a.Id).ToArray();
        return new StageDispatch(stage.Role, new RunStage(run.Id, stage.Id, stage.Name, stage.Kind, stage.Attempt, inputs));
    }

    async Task<IReadOnlyList<StageDispatch>> Transition(Guid runId, CancellationToken ct,
        Func<MetadataDbContext, Run, Task<IReadOnlyList<StageDispatch>>> change)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var run = await db.Runs.Include(r => r.Stages).SingleOrDefaultAsync(r => r.Id == runId, ct);
        if (run is null)
        {
            logger.LogWarning("ignoring a message for run {RunId}: no such run", runId);
            return None;
        }
        var dispatches = await change(db, run);
        await db.SaveChangesAsync(ct);
        return dispatches;
    }
}
