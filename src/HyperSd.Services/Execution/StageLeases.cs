using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Execution;

/// <summary>A worker's hold on one attempt of one stage.</summary>
public sealed record StageLease(Guid RunId, Guid StageId, string Stage, int Attempt, string Owner);

/// <summary>The snapshot a heartbeat writes.</summary>
public sealed record StageProgress(double Fraction, string? DetailJson, Guid? CheckpointArtifactId);

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

    /// <summary>Leases the command's attempt, or returns null when it is stale or someone else leased it.</summary>
    public async Task<StageLease?> TryAcquireAsync(IStageCommand command, CancellationToken ct)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var stage = await db.Stages.SingleOrDefaultAsync(s => s.Id == command.StageId, ct);
        if (stage is null || !IsCurrent(stage, command)) return null;
        var now = DateTimeOffset.UtcNow;
        stage.State = StageState.Running;
        stage.LeaseOwner = options.WorkerId;
        stage.LeaseHeartbeatAt = now;
        stage.LeaseExpiresAt = now + options.LeaseTimeout;
        stage.StartedAt = now;
        stage.Progress = 0;
        db.StageAttempts.Add(new StageAttempt
        {
            Id = Guid.NewGuid(), StageId = stage.Id, Attempt = stage.Attempt, Owner = options.WorkerId, StartedAt = now,
        });
        try
        {
            await db.SaveChangesAsync(ct);
        }
        catch (DbUpdateException)
        {
            // The version moved (another worker leased it, or the orchestrator cancelled) or the attempt row exists.
            return null;
        }
        return new StageLease(stage.RunId, stage.Id, stage.Name, stage.Attempt, options.WorkerId);
    }

    /// <summary>Writes the heartbeat and progress; false when the stage is no longer this lease's (cancelled, failed,
    /// re-dispatched), and its work must stop.</summary>
    public async Task<bool> HeartbeatAsync(StageLease lease, StageProgress progress, CancellationToken ct)
    {
        for (int i = 0; i < 3; i++)
        {
            await using var db = await dbs.CreateDbContextAsync(ct);
            var stage = await db.Stages.SingleOrDefaultAsync(s => s.Id == lease.StageId, ct);
            if (stage is null || !Holds(stage, lease)) return false;
            var now = DateTimeOffset.UtcNow;
            stage.LeaseHeartbeatAt = now;
            stage.LeaseExpiresAt = now + options.LeaseTimeout;
            stage.Progress = Math.Clamp(progress.Fraction, 0, 1);
            stage.ProgressDetail = progress.DetailJson;
            if (progress.CheckpointArtifactId is { } checkpoint) stage.CheckpointArtifactId = checkpoint;
            try
            {
                await db.SaveChangesAsync(ct);
                return true;
            }
            catch (DbUpdateConcurrencyException)
            {
                // The orchestrator changed the stage: read it again.
            }
        }
        return true;
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

    /// <summary>Records how the attempt ended (its finish time is the worker's, for overhead measurements).</summary>
    public async Task FinishAttemptAsync(StageLease lease, AttemptOutcome outcome, string? error, CancellationToken ct)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var attempt = await db.StageAttempts.SingleOrDefaultAsync(a => a.StageId == lease.StageId && a.Attempt == lease.Attempt, ct);
        if (attempt is null || attempt.Outcome is not null) return;
        attempt.Outcome = outcome;
        attempt.FinishedAt = DateTimeOffset.UtcNow;
        attempt.Error = error;
        await db.SaveChangesAsync(ct);
    }
}
