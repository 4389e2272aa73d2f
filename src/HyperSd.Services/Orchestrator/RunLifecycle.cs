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
        Transition(runId, ct, (db, run) => run.State != RunState.Pending ? Task.FromResult(None) : Start(db, run, now));

    Task<IReadOnlyList<StageDispatch>> Start(MetadataDbContext db, Run run, DateTimeOffset now)
    {
        run.State = RunState.Running;
        run.StartedAt = now;
        logger.LogInformation("run {RunId} ({Name}) started", run.Id, run.Name);
        return DispatchNext(db, run, now);
    }

    /// <summary>The database server's time: the one clock that lease times are written and compared with.</summary>
    public async Task<DateTimeOffset> NowAsync(CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        return await db.NowAsync(ct);
    }

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
            AttemptFailed(run, stage, e.Error, e.Transient, now);
            return Task.FromResult(None);
        });

    /// <summary>A transient failure is retried after a backoff within the stage's attempts; a permanent one fails the run.</summary>
    void AttemptFailed(Run run, Stage stage, string error, bool transient, DateTimeOffset now)
    {
        stage.LeaseOwner = null;
        stage.Error = error;
        if (transient && stage.Attempt < stage.MaxAttempts)
        {
            stage.State = StageState.Pending;
            stage.NextAttemptAt = now + Backoff(stage.Attempt);
            logger.LogWarning("run {RunId}: stage {Stage} attempt {Attempt} failed (transient), retry at {NextAttemptAt}: {Error}",
                run.Id, stage.Name, stage.Attempt, stage.NextAttemptAt, error);
        }
        else
            Fail(run, stage, now, transient ? $"{error} (after {stage.Attempt} attempts)" : error);
    }

    /// <summary>A worker's consumer threw on the command (MassTransit moved it to the error queue, after its retries).
    /// Only a command nobody leased fails the stage: when the stage is Running, the fault came from a duplicate delivery
    /// and another worker holds the attempt.</summary>
    public Task<IReadOnlyList<StageDispatch>> StageFaultedAsync(
        IStageCommand command, string error, DateTimeOffset now, CancellationToken ct = default) =>
        Transition(command.RunId, ct, (_, run) =>
        {
            var stage = Current(run, command.StageId, command.Attempt, StageState.Dispatched);
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

    /// <summary>Reconciles at the database server's time (<see cref="NowAsync"/>).</summary>
    public async Task<IReadOnlyList<StageDispatch>> ReconcileAsync(CancellationToken ct) => await ReconcileAsync(await NowAsync(ct), ct);

    /// <summary>
    /// Repairs what messages alone cannot: starts a run left Pending past the dispatch timeout (its StartRun lost), sends
    /// again the command of a stage dispatched but not leased within the dispatch timeout (lost message, busy device),
    /// settles a running stage whose lease expired from its attempt's recorded outcome (a lost completed or failed
    /// event) or re-dispatches it (a dead worker), re-dispatches one that made no progress for its kind's limit (hung
    /// work), and dispatches a pending stage whose retry backoff has elapsed. Runs go oldest first, each on its own: one
    /// that fails is logged and the others go on. <paramref name="now"/> must be the database server's time.
    /// </summary>
    public async Task<IReadOnlyList<StageDispatch>> ReconcileAsync(DateTimeOffset now, CancellationToken ct = default)
    {
        List<Guid> runIds;
        var startBefore = now - options.DispatchTimeout;
        await using (var db = await dbs.CreateDbContextAsync(ct))
            runIds = await db.Runs.Where(r => r.State == RunState.Running || r.State == RunState.Pending && r.CreatedAt < startBefore)
                .OrderBy(r => r.CreatedAt).ThenBy(r => r.Id).Select(r => r.Id).ToListAsync(ct);
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
            catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
            {
                logger.LogError(e, "run {RunId}: reconciliation failed; trying again next round", runId);
            }
        }
        return dispatches;
    }

    async Task<IReadOnlyList<StageDispatch>> ReconcileRun(MetadataDbContext db, Run run, DateTimeOffset now)
    {
        if (run.State == RunState.Pending)
        {
            logger.LogWarning("run {RunId}: pending since {CreatedAt} (its start command lost); starting it", run.Id, run.CreatedAt);
            return await Start(db, run, now);
        }
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
                case StageState.Running:
                    result.AddRange(await ReconcileRunning(db, run, stage, now));
                    break;
                case StageState.Pending when stage.NextAttemptAt is { } at && at <= now:
                    result.AddRange(await Dispatch(db, run, stage, now));
                    break;
            }
        }
        // Nothing in flight and nothing waiting out a backoff, yet the run goes on: the last stages of a concurrent group
        // (a job's chunks) completed at once, and each transition, reading the other still running, neither finished the
        // run nor dispatched what follows. Do it now.
        if (run.State == RunState.Running && run.Stages.All(s => s.State == StageState.Succeeded ||
                                                                 s is { State: StageState.Pending, NextAttemptAt: null }))
        {
            logger.LogWarning("run {RunId}: no stage in flight; moving on from its last completed stage", run.Id);
            result.AddRange(await DispatchNext(db, run, now));
        }
        return result;
    }

    async Task<IReadOnlyList<StageDispatch>> ReconcileRunning(MetadataDbContext db, Run run, Stage stage, DateTimeOffset now)
    {
        bool expired = (stage.LeaseExpiresAt ?? stage.StartedAt + options.LeaseTimeout) < now;
        var noProgressLimit = options.ProgressTimeoutOf(stage.Kind);
        bool hung = !expired && stage.ProgressAt is { } progressed && progressed < now - noProgressLimit;
        if (!expired && !hung) return None;
        var attempt = await db.StageAttempts.SingleOrDefaultAsync(a => a.StageId == stage.Id && a.Attempt == stage.Attempt);
        switch (attempt)
        {
            case { Outcome: AttemptOutcome.Succeeded }:
                // The worker stored its outputs and finished, then its event was delayed (the orchestrator away from the
                // broker) or lost: running the stage again would only repeat the work.
                logger.LogWarning("run {RunId}: stage {Stage} attempt {Attempt} finished at {FinishedAt} but its event has not " +
                                  "arrived; completing it from the store", run.Id, stage.Name, stage.Attempt, attempt.FinishedAt);
                return await Succeed(db, run, stage, now);
            case { Outcome: AttemptOutcome.Failed }:
                // its failed event was lost: the failure's own semantics (a permanent error is not retried; backoff)
                logger.LogWarning("run {RunId}: stage {Stage} attempt {Attempt} failed at {FinishedAt} but its event has not arrived",
                    run.Id, stage.Name, stage.Attempt, attempt.FinishedAt);
                AttemptFailed(run, stage, attempt.Error ?? "failed", attempt.Transient ?? true, now);
                return None;
        }
        var why = expired
            ? $"lease lost (owner {stage.LeaseOwner}, no heartbeat since {stage.LeaseHeartbeatAt:O})"
            : $"hung (no progress since {stage.ProgressAt:O}, limit {noProgressLimit})";
        logger.LogWarning("run {RunId}: stage {Stage} attempt {Attempt}: {Why}", run.Id, stage.Name, stage.Attempt, why);
        if (attempt is { Outcome: null })
        {
            attempt.Outcome = AttemptOutcome.Lost;
            attempt.FinishedAt = now;
            attempt.Error = why;
        }
        stage.LeaseOwner = null;
        if (stage.Attempt < stage.MaxAttempts) return await Dispatch(db, run, stage, now);
        Fail(run, stage, now, $"{why} after {stage.Attempt} attempts");
        return None;
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

    /// <summary>Dispatches the first stage not yet succeeded (with the rest of its group when its kind is concurrent),
    /// or finishes the run when none is left.</summary>
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
        if (!catalogue.Get(next.Kind).Concurrent)
            return next.State == StageState.Pending ? await Dispatch(db, run, next, now) : None;
        // independent stages (a job's chunks): every pending one of the group not waiting out a retry backoff goes now
        var dispatches = new List<StageDispatch>();
        foreach (var stage in run.Stages.OrderBy(s => s.Index).SkipWhile(s => s.State == StageState.Succeeded)
                     .TakeWhile(s => catalogue.Get(s.Kind).Concurrent)
                     .Where(s => s.State == StageState.Pending && s.NextAttemptAt is null).ToList())
        {
            if (run.State != RunState.Running) break;
            dispatches.AddRange(await Dispatch(db, run, stage, now));
        }
        return dispatches;
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
        stage.ProgressAt = null;
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
