using System.Collections.Concurrent;
using System.Diagnostics;
using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.Stages;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Execution;

/// <summary>
/// Accepts stage commands without holding them: checks the command against the store, takes a device, verifies the
/// input artifacts' hashes, leases the stage, and returns (the message is acknowledged) while the work runs in the
/// background with a heartbeat. The outcome is published as the completed event or <see cref="StageFailed"/>.
/// </summary>
public sealed class StageRuntime(
    StageCatalogue catalogue, StageLeases leases, DeviceSlots devices, IDbContextFactory<MetadataDbContext> dbs,
    IArtifactStore store, IBus bus, WorkerOptions options, ILogger<StageRuntime> logger) : IHostedService
{
    public static readonly ActivitySource Activities = new("HyperSd.Services");

    readonly CancellationTokenSource stopping = new();
    readonly ConcurrentDictionary<Guid, Task> running = new();

    /// <summary>Leases and starts the work of the command's stage kind, or acknowledges a stale, duplicate or (device
    /// busy) deferred command without work. Throws when the command or its inputs are invalid — a corrupt input artifact
    /// is never used.</summary>
    public async Task AcceptAsync(IStageCommand command, string role, CancellationToken ct)
    {
        Accepted? accepted;
        using (BeginScope(logger, command.RunId, command.Stage, command.Attempt))
            accepted = await TryAcceptAsync(command, role, ct);
        // outside the scope: the work opens its own, and it must not nest in the consumer's
        if (accepted is { } a)
            running[a.Lease.StageId] = Task.Run(() => RunAsync(a));
    }

    sealed record Accepted(StageLease Lease, Stage Stage, IStageKind Kind, object Settings, List<Artifact> Inputs, string Device);

    async Task<Accepted?> TryAcceptAsync(IStageCommand command, string role, CancellationToken ct)
    {
        var kind = catalogue.Get(command.Kind);
        if (kind.Role != role)
            throw new InvalidOperationException($"stage kind '{kind.Name}' runs on role '{kind.Role}', not on this queue's '{role}'");
        var stage = await leases.FindAsync(command, ct);
        if (stage.Kind != command.Kind)
            throw new InvalidOperationException($"stage {stage.Name} is of kind '{stage.Kind}'; the command names '{command.Kind}'");
        if (!StageLeases.IsCurrent(stage, command))
        {
            logger.LogInformation("ignoring command: the stage is {State} at attempt {Current}", stage.State, stage.Attempt);
            return null;
        }
        var device = devices.TryAcquire();
        if (device is null)
        {
            // Not leased: the orchestrator sends it again after the dispatch timeout.
            logger.LogInformation("all devices busy; leaving the command to the reconciler");
            return null;
        }
        try
        {
            var inputs = await VerifyInputsAsync(command, ct);
            var lease = await leases.TryAcquireAsync(command, ct);
            if (lease is null)
            {
                logger.LogInformation("ignoring command: another worker leased the stage");
                devices.Release(device);
                return null;
            }
            logger.LogInformation("leased on {Device}", device);
            // the settings stored with the stage at submission: the worker never reads the recipe
            return new Accepted(lease, stage, kind, catalogue.ReadSettings(stage), inputs, device);
        }
        catch
        {
            devices.Release(device);
            throw;
        }
    }

    async Task<List<Artifact>> VerifyInputsAsync(IStageCommand command, CancellationToken ct)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var ids = command.InputArtifactIds;
        // in the command's order, which is the order of the stages that made them
        var inputs = (await db.Artifacts.AsNoTracking().Where(a => ids.Contains(a.Id)).ToListAsync(ct))
            .OrderBy(a => Array.IndexOf(ids, a.Id)).ToList();
        var missing = ids.Except(inputs.Select(a => a.Id)).ToList();
        if (missing.Count > 0)
            throw new InvalidOperationException($"input artifact(s) {string.Join(", ", missing)} do not exist in the metadata store");
        foreach (var artifact in inputs)
        {
            try
            {
                await store.VerifyAsync(artifact.Path, artifact.Sha256, ct);
            }
            catch (ArtifactCorruptException e)
            {
                logger.LogError("input artifact {ArtifactId} is unusable: {Error}", artifact.Id, e.Message);
                throw;
            }
        }
        return [.. ids.Select(id => inputs.Single(a => a.Id == id))];
    }

    async Task RunAsync(Accepted accepted)
    {
        var (lease, stage, kind, settings, inputs, slot) = accepted;
        using var scope = BeginScope(logger, lease.RunId, lease.Stage, lease.Attempt);
        using var activity = Activities.StartActivity($"stage {lease.Stage}");
        activity?.SetTag("hypersd.run_id", lease.RunId);
        activity?.SetTag("hypersd.stage", lease.Stage);
        activity?.SetTag("hypersd.attempt", lease.Attempt);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(stopping.Token);
        using var heartbeatStop = new CancellationTokenSource();
        Task heartbeat = Task.CompletedTask;
        try
        {
            var device = settings is IModelStageSettings m ? StageModels.ResolveDevice(m.Model, slot) : slot;
            var context = new StageContext(lease, stage, inputs, device, store, dbs, leases, options, logger, cancel.Token);
            heartbeat = new LeaseKeeper(leases, options, logger).KeepAsync(context, cancel, heartbeatStop.Token);
            var watch = Stopwatch.StartNew();
            await AwaitWorkAsync(Task.Run(() =>
            {
                // LibTorch's thread count is per OS thread: set on the thread the work's synchronous compute starts on
                if (options.TensorThreads is int threads) TorchSharp.torch.set_num_threads(threads);
                return kind.ExecuteAsync(context, settings);
            }), cancel.Token);
            cancel.Token.ThrowIfCancellationRequested();
            await heartbeatStop.CancelAsync();
            await heartbeat;
            // Fenced with the final progress: a stage cancelled or superseded while its last step ran must not complete.
            if (!await leases.CompleteAsync(lease, context.Progress, logger, CancellationToken.None))
            {
                logger.LogWarning("finished, but the lease was lost meanwhile; dropping the result");
                await leases.FinishAttemptAsync(lease, AttemptOutcome.Cancelled, "lease lost before completion", CancellationToken.None);
                return;
            }
            await bus.Publish(new StageCompleted(lease.RunId, lease.StageId, lease.Attempt, [.. context.Outputs]), CancellationToken.None);
            logger.LogInformation("succeeded in {Seconds:F1} s with {Count} output(s)", watch.Elapsed.TotalSeconds, context.Outputs.Count);
        }
        catch (Exception e) when (e is OperationCanceledException && cancel.IsCancellationRequested || e is LeaseLostException)
        {
            var workerStopping = stopping.IsCancellationRequested;
            logger.LogWarning(workerStopping
                ? "worker stopping: attempt abandoned (the stage will be re-dispatched)"
                : "lease lost: work stopped");
            try
            {
                await leases.FinishAttemptAsync(lease, workerStopping ? AttemptOutcome.Lost : AttemptOutcome.Cancelled,
                    workerStopping ? "worker stopped" : "lease lost", CancellationToken.None);
            }
            catch (Exception report)
            {
                // cut off from the store: the orchestrator records the attempt as lost when the lease expires
                logger.LogWarning("could not record the attempt's end: {Error}", report.Message);
            }
        }
        catch (Exception e)
        {
            bool transient = StageErrors.IsTransient(e);
            logger.LogError(e, "failed ({Kind})", transient ? "transient" : "permanent");
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            try
            {
                await leases.FinishAttemptAsync(lease, AttemptOutcome.Failed, e.Message, CancellationToken.None, transient);
                await bus.Publish(new StageFailed(lease.RunId, lease.StageId, lease.Attempt, $"{e.GetType().Name}: {e.Message}", transient),
                    CancellationToken.None);
            }
            catch (Exception report)
            {
                // The lease expires and the reconciler re-dispatches the stage.
                logger.LogError(report, "could not report the failure");
            }
        }
        finally
        {
            await heartbeatStop.CancelAsync();
            await heartbeat;
            devices.Release(slot);
            running.TryRemove(lease.StageId, out _);
        }
    }

    /// <summary>Waits for the work; once it is cancelled (lease lost, run cancelled, worker stopping) it has a lease period
    /// to stop (a trainer checkpoints on the way out). Hung work (a stalled file system, a hung device call) never looks
    /// at its token: it is abandoned then, so that its device slot is freed.</summary>
    async Task AwaitWorkAsync(Task work, CancellationToken cancel)
    {
        try
        {
            await work.WaitAsync(cancel);
            return;
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested && !work.IsCompleted)
        {
        }
        if (await Task.WhenAny(work, Task.Delay(options.LeaseTimeout, CancellationToken.None)) == work)
        {
            await work;
            return;
        }
        logger.LogError("the work does not stop; abandoning it and freeing its device");
        _ = work.ContinueWith(t => logger.LogWarning("abandoned work ended: {Status}", t.Status), TaskScheduler.Default);
        cancel.ThrowIfCancellationRequested();
    }

    /// <summary>The scope every log line of a stage carries.</summary>
    public static IDisposable? BeginScope(ILogger logger, Guid runId, string stage, int attempt) =>
        logger.BeginScope("run {RunId} stage {Stage} attempt {Attempt}", runId, stage, attempt);

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Stops running stages (a training stage checkpoints on the way out) and waits for them.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await stopping.CancelAsync();
        await Task.WhenAll(running.Values).WaitAsync(cancellationToken).ContinueWith(_ => { }, CancellationToken.None);
    }
}

/// <summary>The consumer on every stage role's queue: accepts a <see cref="RunStage"/> through <see cref="StageRuntime"/>, which
/// runs its kind's work in the background.</summary>
public sealed class RunStageConsumer(StageRuntime runtime, string role) : IConsumer<RunStage>
{
    public Task Consume(ConsumeContext<RunStage> context) => runtime.AcceptAsync(context.Message, role, context.CancellationToken);
}
