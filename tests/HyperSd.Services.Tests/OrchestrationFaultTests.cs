using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Execution;
using HyperSd.Services.Hosting;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.Stages;
using HyperSd.Testing;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging.Abstractions;

namespace HyperSd.Services.Tests;

/// <summary>Leases and reconciliation under faults, on the real PostgreSQL server: a zombie attempt that outlives its
/// lease, a worker cut off from the store, a store blip at a stage's end, workers whose clocks are wrong, lost messages,
/// a run whose reconciliation throws, a duplicate delivery's fault, hung work.</summary>
public sealed class OrchestrationFaultTests : IClassFixture<PostgresDatabase>, IDisposable
{
    readonly TestStore store;
    readonly WorkerOptions options;
    RunLifecycle machine;

    public OrchestrationFaultTests(PostgresDatabase database)
    {
        store = new TestStore(database.ConnectionString);
        options = Options("orchestrator");
        machine = Machine(options);
    }

    RunLifecycle Machine(WorkerOptions o) => new(store, StageCatalogue.Default(), o, NullLogger<RunLifecycle>.Instance);

    public void Dispose() => store.Dispose();

    WorkerOptions Options(string worker, Action<WorkerOptions>? change = null) => store.WorkerOptions(o =>
    {
        o.WorkerId = worker;
        o.HeartbeatInterval = TimeSpan.FromMilliseconds(200);
        o.LeaseTimeout = TimeSpan.FromSeconds(2);
        change?.Invoke(o);
    });

    async Task<RunStage> DispatchedAsync()
    {
        var runId = await store.CreateRunAsync(TinyToy.Recipe(), options);
        return Assert.Single(await machine.StartAsync(runId, await machine.NowAsync())).Command;
    }

    /// <summary>What the reconciler sends for <paramref name="runId"/> (the class's tests share one database).</summary>
    async Task<List<StageDispatch>> ReconcileAsync(Guid runId, DateTimeOffset? now = null) =>
        [.. (await (now is { } at ? machine.ReconcileAsync(at) : machine.ReconcileAsync(CancellationToken.None)))
            .Where(d => d.Command.RunId == runId)];

    StageContext Context(StageLease lease, Stage stage, TestStore on, StageLeases leases, WorkerOptions o,
        CancellationToken ct = default) =>
        new(lease, stage, [], "cpu", on.Artifacts, on, leases, o, NullLogger.Instance, ct);

    static string WriteFile(string dir, string name, string content)
    {
        var path = Path.Combine(dir, name);
        File.WriteAllText(path, content);
        return path;
    }

    [Fact]
    public async Task A_zombie_attempt_cannot_record_outputs_or_complete_and_keeps_to_its_own_folder()
    {
        var command = await DispatchedAsync();
        var stage = await store.StageAsync(command.RunId, command.Stage);
        var zombieOptions = Options("zombie");
        var zombieLeases = new StageLeases(store, zombieOptions);
        var first = (await zombieLeases.TryAcquireAsync(command, default))!;
        var zombie = Context(first, stage, store, zombieLeases, zombieOptions);
        var zombieFile = WriteFile(zombie.WorkDir, "dataset.bin", "zombie");

        // its lease expires (by the server's clock) and the reconciler dispatches attempt 2, which a second worker leases
        var later = await machine.NowAsync() + options.LeaseTimeout + TimeSpan.FromSeconds(1);
        var second = Assert.Single(await ReconcileAsync(command.RunId, later)).Command;
        Assert.Equal(2, second.Attempt);
        var workerOptions = Options("worker-2");
        var workerLeases = new StageLeases(store, workerOptions);
        var lease2 = (await workerLeases.TryAcquireAsync(second, default))!;
        var worker = Context(lease2, await store.StageAsync(command.RunId, command.Stage), store, workerLeases, workerOptions);
        Assert.NotEqual(zombie.WorkDir, worker.WorkDir);
        Assert.Equal("zombie", File.ReadAllText(zombieFile));
        var workerFile = WriteFile(worker.WorkDir, "dataset.bin", "attempt 2");
        Assert.Equal("zombie", File.ReadAllText(zombieFile)); // the folders do not mix

        // the zombie goes on: nothing it writes is recorded, and it cannot complete the stage
        Assert.False(await zombieLeases.HeartbeatAsync(first, zombie.Progress, default));
        await Assert.ThrowsAsync<LeaseLostException>(() => zombie.AddOutputAsync(ArtifactKind.Dataset, zombieFile, "dataset"));
        await Assert.ThrowsAsync<LeaseLostException>(() => zombie.WriteFencedAsync(db =>
        {
            db.Evaluations.Add(new Evaluation
            {
                Id = Guid.NewGuid(), RunId = command.RunId, StageId = command.StageId, Model = "zombie", Sampler = "s", Steps = 1,
                Metric = "m", Value = 1, CreatedAt = DateTimeOffset.UtcNow,
            });
            return Task.FromResult(0);
        }));
        Assert.False(await zombieLeases.CompleteAsync(first, zombie.Progress, NullLogger.Instance, default));
        Assert.False(Directory.Exists(store.Artifacts.GetFullPath(StageContext.OutputPrefix(command.RunId, command.Stage, 1))));

        // attempt 2 records its result and completes; the run goes on with attempt 2's output
        var output = await worker.AddOutputAsync(ArtifactKind.Dataset, workerFile, "dataset");
        Assert.True(await workerLeases.CompleteAsync(lease2, worker.Progress, NullLogger.Instance, default));
        var next = Assert.Single(await machine.StageCompletedAsync(
            new StageCompleted(command.RunId, command.StageId, 2, [output]), await machine.NowAsync()));
        Assert.Equal([output], next.Command.InputArtifactIds);
        // a late completed event of the zombie changes nothing
        Assert.Empty(await machine.StageCompletedAsync(new StageCompleted(command.RunId, command.StageId, 1, []), await machine.NowAsync()));
        await using var db = store.CreateDbContext();
        Assert.False(await db.Artifacts.AnyAsync(a => a.StageId == command.StageId && a.Attempt == 1));
        Assert.False(await db.Evaluations.AnyAsync(e => e.RunId == command.RunId));
        var attempts = await db.StageAttempts.Where(a => a.StageId == command.StageId).OrderBy(a => a.Attempt).ToListAsync();
        Assert.Equal([(1, AttemptOutcome.Lost), (2, AttemptOutcome.Succeeded)], attempts.Select(a => (a.Attempt, a.Outcome!.Value)));
        Assert.Equal("attempt 2", File.ReadAllText(store.Artifacts.GetFullPath((await db.Artifacts.SingleAsync(a => a.Id == output)).Path)));
    }

    [Fact]
    public async Task A_worker_cut_off_from_the_store_stops_its_work_before_its_lease_expires()
    {
        var command = await DispatchedAsync();
        using var proxy = new TcpProxy(store.Options.ConnectionString);
        using var cutOff = new TestStore(proxy.ConnectionString(store.Options.ConnectionString), migrate: false, artifactRoot: store.Artifacts.Root);
        var zombieOptions = Options("zombie");
        var leases = new StageLeases(cutOff, zombieOptions);
        var lease = (await leases.TryAcquireAsync(command, default))!;
        using var work = new CancellationTokenSource();
        using var stop = new CancellationTokenSource();
        var context = Context(lease, await store.StageAsync(command.RunId, command.Stage), cutOff, leases, zombieOptions, work.Token);
        var keeper = new LeaseKeeper(leases, zombieOptions, NullLogger.Instance).KeepAsync(context, work, stop.Token);

        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.False(work.IsCancellationRequested); // renewing
        proxy.Cut();
        var cutAt = DateTime.UtcNow;
        await Task.Delay(Timeout.Infinite, work.Token).ContinueWith(_ => { }, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        var stoppedAfter = DateTime.UtcNow - cutAt;
        // stopped within one lease period of the cut, and before the server counts its lease as expired
        Assert.True(stoppedAfter < zombieOptions.LeaseTimeout, $"stopped {stoppedAfter} after the cut");
        var stage = await store.StageAsync(command.RunId, command.Stage);
        Assert.True(stage.LeaseExpiresAt > await machine.NowAsync(), $"the lease expired at {stage.LeaseExpiresAt:O} before the work stopped");
        await stop.CancelAsync();
        await keeper;
    }

    [Fact]
    public async Task A_store_blip_at_a_stages_end_keeps_its_work_and_the_stage_completes()
    {
        var command = await DispatchedAsync();
        using var proxy = new TcpProxy(store.Options.ConnectionString);
        using var flaky = new TestStore(proxy.ConnectionString(store.Options.ConnectionString), migrate: false, artifactRoot: store.Artifacts.Root);
        var workerOptions = Options("worker", o => o.LeaseTimeout = TimeSpan.FromSeconds(30));
        var leases = new StageLeases(flaky, workerOptions);
        var lease = (await leases.TryAcquireAsync(command, default))!;
        var context = Context(lease, await store.StageAsync(command.RunId, command.Stage), flaky, leases, workerOptions);
        var file = WriteFile(context.WorkDir, "dataset.bin", "finished work");

        proxy.Cut();
        var adding = context.AddOutputAsync(ArtifactKind.Dataset, file, "dataset");
        await Task.Delay(TimeSpan.FromSeconds(3));
        Assert.False(adding.IsCompleted);
        proxy.Restore();
        var output = await adding.WaitAsync(TimeSpan.FromSeconds(30));
        proxy.Cut();
        var completing = leases.CompleteAsync(lease, context.Progress, NullLogger.Instance, default);
        await Task.Delay(TimeSpan.FromSeconds(2));
        proxy.Restore();
        Assert.True(await completing.WaitAsync(TimeSpan.FromSeconds(30)));

        Assert.NotEmpty(await machine.StageCompletedAsync(
            new StageCompleted(command.RunId, command.StageId, 1, [output]), await machine.NowAsync()));
        await using var db = store.CreateDbContext();
        Assert.Equal(AttemptOutcome.Succeeded, (await db.StageAttempts.SingleAsync(a => a.StageId == command.StageId)).Outcome);
        Assert.Equal(StageState.Succeeded, (await store.StageAsync(command.RunId, command.Stage)).State);
    }

    sealed class SkewedClock(TimeSpan skew) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => base.GetUtcNow() + skew;
    }

    [Theory]
    [InlineData(-300)]
    [InlineData(-60)]
    [InlineData(60)]
    [InlineData(300)]
    public async Task A_skewed_worker_clock_neither_expires_live_work_nor_delays_detection(int skewSeconds)
    {
        var command = await DispatchedAsync();
        var workerOptions = Options("skewed", o =>
        {
            o.Clock = new SkewedClock(TimeSpan.FromSeconds(skewSeconds));
            o.LeaseTimeout = TimeSpan.FromSeconds(60);
        });
        var leases = new StageLeases(store, workerOptions);
        var lease = (await leases.TryAcquireAsync(command, default))!;
        Assert.True(await leases.HeartbeatAsync(lease, new StageProgress(0.5, null, null), default));
        var context = Context(lease, await store.StageAsync(command.RunId, command.Stage), store, leases, workerOptions);
        await context.AddOutputAsync(ArtifactKind.Dataset, WriteFile(context.WorkDir, "d.bin", "d"), "dataset");

        var now = await machine.NowAsync();
        var stage = await store.StageAsync(command.RunId, command.Stage);
        Assert.InRange(stage.LeaseHeartbeatAt!.Value, now - TimeSpan.FromSeconds(5), now);
        Assert.InRange(stage.LeaseExpiresAt!.Value, now + TimeSpan.FromSeconds(55), now + TimeSpan.FromSeconds(60));
        Assert.Empty(await ReconcileAsync(command.RunId)); // live work is not re-dispatched
        // and a dead worker is detected one lease period after its last heartbeat, by the server's clock
        Assert.Empty(await ReconcileAsync(command.RunId, stage.LeaseExpiresAt!.Value - TimeSpan.FromSeconds(1)));
        var redispatched = Assert.Single(await ReconcileAsync(command.RunId, stage.LeaseExpiresAt!.Value + TimeSpan.FromSeconds(1)));
        Assert.Equal(2, redispatched.Command.Attempt);
    }

    [Fact]
    public async Task The_server_clock_is_read_on_both_providers()
    {
        using var sqlite = new TestStore();
        foreach (var on in new[] { store, sqlite })
        {
            await using var db = on.CreateDbContext();
            var now = await db.NowAsync();
            Assert.InRange(now, DateTimeOffset.UtcNow - TimeSpan.FromSeconds(5), DateTimeOffset.UtcNow + TimeSpan.FromSeconds(5));
        }
    }

    [Fact]
    public async Task A_lost_StartRun_is_recovered_by_the_reconciler()
    {
        var runId = await store.CreateRunAsync(TinyToy.Recipe(), options); // StartRun published to nowhere
        var now = await machine.NowAsync();
        Assert.Empty(await ReconcileAsync(runId, now));
        var started = Assert.Single(await ReconcileAsync(runId, now + options.DispatchTimeout + TimeSpan.FromSeconds(1)));
        Assert.Equal(("dataset", 1), (started.Command.Stage, started.Command.Attempt));
        Assert.Equal(RunState.Running, (await store.RunAsync(runId)).State);
        Assert.Empty(await machine.StartAsync(runId, await machine.NowAsync())); // the StartRun, if it comes late, does nothing
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_lost_StageFailed_is_settled_from_the_attempt_with_its_semantics(bool transient)
    {
        var command = await DispatchedAsync();
        var leases = new StageLeases(store, Options("worker"));
        var lease = (await leases.TryAcquireAsync(command, default))!;
        await leases.FinishAttemptAsync(lease, AttemptOutcome.Failed, "IOException: disk", default, transient);
        // the worker stops heartbeating; its StageFailed never arrives
        var expired = (await store.StageAsync(command.RunId, command.Stage)).LeaseExpiresAt!.Value + TimeSpan.FromSeconds(1);
        Assert.Empty(await ReconcileAsync(command.RunId, expired));
        var stage = await store.StageAsync(command.RunId, command.Stage);
        var run = await store.RunAsync(command.RunId);
        if (!transient)
        {
            // a permanent error is not re-dispatched
            Assert.Equal((RunState.Failed, StageState.Failed), (run.State, stage.State));
            Assert.Contains("IOException: disk", run.Error);
            Assert.Empty(await ReconcileAsync(command.RunId, expired + TimeSpan.FromHours(1)));
            return;
        }
        // a transient one is retried after the backoff
        Assert.Equal((RunState.Running, StageState.Pending), (run.State, stage.State));
        Assert.Equal(expired + options.RetryBackoff, stage.NextAttemptAt);
        Assert.Empty(await ReconcileAsync(command.RunId, expired + options.RetryBackoff - TimeSpan.FromSeconds(1)));
        Assert.Equal(2, Assert.Single(await ReconcileAsync(command.RunId, expired + options.RetryBackoff)).Command.Attempt);
    }

    [Fact]
    public async Task A_run_whose_reconciliation_throws_does_not_stop_the_others()
    {
        // the first run's stage names a kind nobody knows: building its command throws, every round
        var broken = await DispatchedAsync();
        await using (var db = store.CreateDbContext())
            await db.Stages.Where(s => s.Id == broken.StageId).ExecuteUpdateAsync(u => u.SetProperty(s => s.Kind, "no-such-kind"));
        var lost = await store.CreateRunAsync(TinyToy.Recipe(), options);
        var later = await machine.NowAsync() + options.DispatchTimeout + TimeSpan.FromSeconds(1);
        for (int round = 0; round < 2; round++)
        {
            var sent = await machine.ReconcileAsync(later);
            Assert.DoesNotContain(sent, d => d.Command.RunId == broken.RunId);
            Assert.Contains(sent, d => d.Command.RunId == lost);
            later += options.DispatchTimeout + TimeSpan.FromSeconds(1);
        }
        Assert.Equal(RunState.Running, (await store.RunAsync(lost)).State);
    }

    [Fact]
    public async Task A_fault_from_a_duplicate_delivery_does_not_fail_a_run_another_attempt_holds()
    {
        var command = await DispatchedAsync();
        var leases = new StageLeases(store, Options("worker"));
        Assert.NotNull(await leases.TryAcquireAsync(command, default));
        // a copy of the command, delivered again, faulted on a transient error after its retries
        Assert.Empty(await machine.StageFaultedAsync(command, "NpgsqlException: connection reset", await machine.NowAsync()));
        var run = await store.RunAsync(command.RunId);
        Assert.Equal((RunState.Running, StageState.Running), (run.State, run.Stages[0].State));
    }

    [Fact]
    public async Task A_stage_without_progress_for_its_kinds_limit_is_hung_and_redispatched()
    {
        var hungOptions = Options("orchestrator", o => o.ProgressTimeouts["prepare-dataset"] = TimeSpan.FromSeconds(1.5));
        machine = Machine(hungOptions);
        var command = await DispatchedAsync();
        var leases = new StageLeases(store, Options("worker"));
        var lease = (await leases.TryAcquireAsync(command, default))!;
        var progress = new StageProgress(0.1, null, null);
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.True(await leases.HeartbeatAsync(lease, progress, default, progressed: true));
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.True(await leases.HeartbeatAsync(lease, progress, default, progressed: false));
        Assert.Empty(await ReconcileAsync(command.RunId)); // moved a second ago
        await Task.Delay(TimeSpan.FromSeconds(1));
        // alive (the lease is renewed) but stuck: no progress for 2 s
        Assert.True(await leases.HeartbeatAsync(lease, progress, default, progressed: false));
        var again = Assert.Single(await ReconcileAsync(command.RunId));
        Assert.Equal(2, again.Command.Attempt);
        Assert.False(await leases.HeartbeatAsync(lease, progress, default, progressed: false)); // the hung worker's work stops
        await using var db = store.CreateDbContext();
        var attempt = await db.StageAttempts.SingleAsync(a => a.StageId == command.StageId && a.Attempt == 1);
        Assert.Equal(AttemptOutcome.Lost, attempt.Outcome);
        Assert.Contains("no progress", attempt.Error);
    }

    [Fact]
    public async Task A_corrupt_newest_checkpoint_falls_back_to_the_one_before_then_to_a_fresh_start()
    {
        var command = await DispatchedAsync();
        var o = Options("worker", x => x.LeaseTimeout = TimeSpan.FromSeconds(30));
        var leases = new StageLeases(store, o);
        var lease = (await leases.TryAcquireAsync(command, default))!;
        var first = Context(lease, await store.StageAsync(command.RunId, command.Stage), store, leases, o);
        var saved = new List<Guid>();
        foreach (var step in new[] { 2, 4 })
        {
            var dir = Path.Combine(first.WorkDir, "checkpoint");
            Directory.CreateDirectory(dir);
            WriteFile(dir, "state.bin", $"step {step}");
            saved.Add(await first.AddCheckpointAsync(dir, $"step-{step:D7}"));
        }
        Assert.True(await leases.HeartbeatAsync(lease, first.Progress, default)); // the stage points at step 4
        await using (var db = store.CreateDbContext())
        {
            var paths = await db.Artifacts.Where(a => saved.Contains(a.Id)).OrderBy(a => a.CreatedAt).Select(a => a.Path).ToListAsync();
            Assert.All(paths, p => Assert.StartsWith(StageContext.OutputPrefix(command.RunId, command.Stage, 1) + "checkpoints/", p));
            // the newest one rots on disk
            File.WriteAllText(Path.Combine(store.Artifacts.GetFullPath(paths[1]), "state.bin"), "garbage");
        }

        var later = await machine.NowAsync() + o.LeaseTimeout + TimeSpan.FromSeconds(1);
        var second = Assert.Single(await ReconcileAsync(command.RunId, later)).Command;
        var lease2 = (await leases.TryAcquireAsync(second, default))!;
        var stage = await store.StageAsync(command.RunId, command.Stage);
        Assert.Equal(saved[1], stage.CheckpointArtifactId);
        var next = Context(lease2, stage, store, leases, o);
        var target = Path.Combine(next.WorkDir, "checkpoint");
        Assert.True(await next.RestoreAsync(target));
        Assert.Equal("step 2", File.ReadAllText(Path.Combine(target, "state.bin")));

        // with every checkpoint corrupt, a fresh start
        await using (var db = store.CreateDbContext())
            foreach (var path in await db.Artifacts.Where(a => saved.Contains(a.Id)).Select(a => a.Path).ToListAsync())
                File.WriteAllText(Path.Combine(store.Artifacts.GetFullPath(path), "state.bin"), "garbage");
        var fresh = Path.Combine(next.WorkDir, "fresh");
        Assert.False(await next.RestoreAsync(fresh));
        Assert.False(Directory.Exists(fresh));
    }
}
