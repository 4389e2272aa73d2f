using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Execution;

/// <summary>A worker's hold on one attempt of one stage.</summary>
public sealed record StageLease(Guid RunId, Guid StageId, string Stage, int Attempt, string Owner);

/// <summary>The snapshot a heartbeat writes; <paramref name="Reports"/> counts the work's reports, so a heartbeat knows
/// whether the work moved since the last one.</summary>
public sealed record StageProgress(double Fraction, string? DetailJson, Guid? CheckpointArtifactId, long Reports = 0);

/// <summary>
/// Stage leases in the metadata store. Leasing moves a stage from Dispatched to Running under its concurrency token,
/// so of two workers holding the same command (a redelivery, a re-send) exactly one wins; the other, like any command
/// for an attempt that is no longer the current Dispatched one, gets null and acknowledges without work.
/// </summary>
public sealed class StageLeases(IDbContextFactory<MetadataDbContext> dbs, WorkerOptions options)
{
    /// <summary>The stage the command names, checked against the command; throws if it does not exist.</summary>
    public async Task<Stage> FindAsync(IStageCommand command, CancellationToken ct)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var stage = await db.Stages.AsNoTracking().SingleOrDefaultAsync(s => s.Id == command.StageId, ct)
            ?? throw new InvalidOperationException($"stage {command.StageId} ({command.Stage}) of run {command.RunId} does not exist");
        if (stage.RunId != command.RunId || stage.Name != command.Stage)
            throw new InvalidOperationException($"stage {command.StageId} is '{stage.Name}' of run {stage.RunId}; " +
                                                $"the command names '{command.Stage}' of run {command.RunId}");
        return stage;
    }

    public static bool IsCurrent(Stage stage, IStageCommand command) =>
        stage.Attempt == command.Attempt && stage.State == StageState.Dispatched;

    /// <summary>Leases the command's attempt, or returns null when it is stale or someone else leased it. The lease's
    /// times are the database server's (<see cref="ServerClock"/>), never this worker's clock.</summary>
    public async Task<StageLease?> TryAcquireAsync(IStageCommand command, CancellationToken ct)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        await using var tx = await db.Database.BeginTransactionAsync(ct);
        // Dispatched → Running at the command's attempt in one conditional UPDATE: of two workers, one changes the row.
        // Only the clock's SQL is spliced in; every value is a parameter.
        var sql =
            $"UPDATE stages SET state = {{0}}, lease_owner = {{1}}, lease_heartbeat_at = {db.NowSql()}, " +
            $"lease_expires_at = {db.NowPlusSql(options.LeaseTimeout)}, started_at = {db.NowSql()}, progress_at = {db.NowSql()}, " +
            "progress = 0, " +
            "version = version + 1 WHERE id = {2} AND attempt = {3} AND state = {4}";
        int leased = await db.Database.ExecuteSqlRawAsync(sql,
            [nameof(StageState.Running), options.WorkerId, command.StageId, command.Attempt, nameof(StageState.Dispatched)], ct);
        if (leased == 0) return null;
        var stage = await db.Stages.AsNoTracking().SingleAsync(s => s.Id == command.StageId, ct);
        db.StageAttempts.Add(new StageAttempt
        {
            Id = Guid.NewGuid(), StageId = stage.Id, Attempt = stage.Attempt, Owner = options.WorkerId, StartedAt = stage.StartedAt!.Value,
        });
        try
        {
            await db.SaveChangesAsync(ct);
        }
        catch (DbUpdateException)
        {
            // the attempt row exists: an earlier lease of this attempt
            return null;
        }
        await tx.CommitAsync(ct);
        return new StageLease(stage.RunId, stage.Id, stage.Name, stage.Attempt, options.WorkerId);
    }

    /// <summary>Writes the heartbeat and progress; false when the stage is no longer this lease's (cancelled, failed,
    /// re-dispatched), and its work must stop. <paramref name="progressed"/>: the work reported since the last heartbeat
    /// (else the stage's progress time stays, and it is hung once that is older than its kind's limit).</summary>
    public async Task<bool> HeartbeatAsync(StageLease lease, StageProgress progress, CancellationToken ct, bool progressed = true)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        return await RenewAsync(db, lease, progress, progressed, ct);
    }

    /// <summary>Renews the lease from the server's clock and writes the progress, if this lease still holds the stage; in
    /// <paramref name="db"/>'s transaction the row stays locked until it commits, which makes this the fencing check of
    /// every result a worker records: a re-dispatch (a new attempt) either waits for that commit or makes it fail.</summary>
    public async Task<bool> RenewAsync(MetadataDbContext db, StageLease lease, StageProgress progress, bool progressed,
        CancellationToken ct)
    {
        // only the clock's SQL is spliced in; every value is a parameter
        var sql =
            $"UPDATE stages SET lease_heartbeat_at = {db.NowSql()}, lease_expires_at = {db.NowPlusSql(options.LeaseTimeout)}, " +
            (progressed ? $"progress_at = {db.NowSql()}, " : "") +
            "progress = {0}, progress_detail = {1}, checkpoint_artifact_id = COALESCE({2}, checkpoint_artifact_id), " +
            "version = version + 1 " +
            "WHERE id = {3} AND attempt = {4} AND state = {5} AND lease_owner = {6}";
        object?[] values =
        [
            Math.Clamp(progress.Fraction, 0, 1), progress.DetailJson, progress.CheckpointArtifactId, lease.StageId, lease.Attempt,
            nameof(StageState.Running), lease.Owner,
        ];
        // a null value is a NULL parameter
        return await db.Database.ExecuteSqlRawAsync(sql, values!, ct) == 1;
    }

    /// <summary>Runs <paramref name="change"/> and saves it in one transaction that first renews the lease (the fencing
    /// check); throws <see cref="LeaseLostException"/>, saving nothing, when the lease no longer holds. Transient store
    /// errors are retried.</summary>
    public Task<T> WriteFencedAsync<T>(StageLease lease, StageProgress progress, Func<MetadataDbContext, Task<T>> change,
        ILogger logger, CancellationToken ct) =>
        StoreRetry.RunAsync(async () =>
        {
            await using var db = await dbs.CreateDbContextAsync(ct);
            await using var tx = await db.Database.BeginTransactionAsync(ct);
            // recording a result is progress
            if (!await RenewAsync(db, lease, progress, true, ct)) throw new LeaseLostException(lease);
            var result = await change(db);
            await db.SaveChangesAsync(ct);
            await tx.CommitAsync(ct);
            return result;
        }, logger, ct);

    /// <summary>Records the attempt as succeeded with its final progress, fenced: false (nothing written) when the lease
    /// was lost meanwhile.</summary>
    public async Task<bool> CompleteAsync(StageLease lease, StageProgress progress, ILogger logger, CancellationToken ct)
    {
        try
        {
            await WriteFencedAsync(lease, progress, db => EndAttemptAsync(db, lease, AttemptOutcome.Succeeded, null, ct), logger, ct);
            return true;
        }
        catch (LeaseLostException)
        {
            return false;
        }
    }

    /// <summary>Whether the lease still holds (the stage is Running at its attempt under its owner).</summary>
    public async Task<bool> StillHeldAsync(StageLease lease, CancellationToken ct)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var stage = await db.Stages.AsNoTracking().SingleOrDefaultAsync(s => s.Id == lease.StageId, ct);
        return stage is not null && Holds(stage, lease);
    }

    static bool Holds(Stage stage, StageLease lease) =>
        stage.State == StageState.Running && stage.Attempt == lease.Attempt && stage.LeaseOwner == lease.Owner;

    /// <summary>Records how the attempt ended (not fenced: an abandoned attempt may say so late); the finish time is the
    /// server's, like the start.</summary>
    public async Task FinishAttemptAsync(StageLease lease, AttemptOutcome outcome, string? error, CancellationToken ct,
        bool? transient = null)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        if (await EndAttemptAsync(db, lease, outcome, error, ct, transient)) await db.SaveChangesAsync(ct);
    }

    static async Task<bool> EndAttemptAsync(MetadataDbContext db, StageLease lease, AttemptOutcome outcome, string? error,
        CancellationToken ct, bool? transient = null)
    {
        var attempt = await db.StageAttempts.SingleOrDefaultAsync(a => a.StageId == lease.StageId && a.Attempt == lease.Attempt, ct);
        if (attempt is null || attempt.Outcome is not null) return false;
        attempt.Outcome = outcome;
        attempt.FinishedAt = await db.NowAsync(ct);
        attempt.Error = error;
        attempt.Transient = transient;
        return true;
    }
}

/// <summary>The stage is no longer this attempt's (re-dispatched, cancelled, failed): nothing it writes is recorded.</summary>
public sealed class LeaseLostException(StageLease lease)
    : Exception($"stage {lease.Stage} attempt {lease.Attempt} is no longer leased by {lease.Owner}; its result is not recorded");
