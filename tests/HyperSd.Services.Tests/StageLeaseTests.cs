using HyperSd.Testing;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Services.Execution;
using HyperSd.Services.Hosting;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging.Abstractions;

namespace HyperSd.Services.Tests;

public sealed class StageLeaseTests : IDisposable
{
    readonly TestStore store = new();
    readonly WorkerOptions options;
    readonly RunLifecycle machine;

    public StageLeaseTests()
    {
        options = store.WorkerOptions();
        machine = new RunLifecycle(store, StageCatalogue.Default(), options, NullLogger<RunLifecycle>.Instance);
    }

    public void Dispose() => store.Dispose();

    async Task<RunStage> Dispatched()
    {
        var runId = await store.CreateRunAsync(TinyToy.Recipe(), options);
        return (await machine.StartAsync(runId, DateTimeOffset.UtcNow))[0].Command;
    }

    [Fact]
    public async Task A_duplicate_command_gets_one_lease_and_one_attempt_row()
    {
        var command = await Dispatched();
        var leases = new StageLeases(store, options);
        var first = await leases.TryAcquireAsync(command, default);
        var second = await leases.TryAcquireAsync(command, default);
        Assert.NotNull(first);
        Assert.Null(second);

        await using var db = store.CreateDbContext();
        var stage = await db.Stages.SingleAsync(s => s.Id == command.StageId);
        Assert.Equal(StageState.Running, stage.State);
        Assert.Equal("test-worker", stage.LeaseOwner);
        Assert.NotNull(stage.LeaseHeartbeatAt);
        var attempt = Assert.Single(await db.StageAttempts.Where(a => a.StageId == command.StageId).ToListAsync());
        Assert.Equal(1, attempt.Attempt);
        Assert.Null(attempt.Outcome);
    }

    [Fact]
    public async Task Two_workers_racing_for_one_command_get_one_lease()
    {
        var command = await Dispatched();
        var a = new StageLeases(store, store.WorkerOptions(o => o.WorkerId = "a"));
        var b = new StageLeases(store, store.WorkerOptions(o => o.WorkerId = "b"));
        var results = await Task.WhenAll(a.TryAcquireAsync(command, default), b.TryAcquireAsync(command, default));
        Assert.Single(results, r => r is not null);
        await using var db = store.CreateDbContext();
        Assert.Equal(1, await db.StageAttempts.CountAsync(x => x.StageId == command.StageId));
    }

    [Fact]
    public async Task A_command_for_another_attempt_is_not_leased()
    {
        var command = await Dispatched();
        var leases = new StageLeases(store, options);
        Assert.Null(await leases.TryAcquireAsync(command with { Attempt = 2 }, default));
        Assert.Null(await leases.TryAcquireAsync(command with { Attempt = 0 }, default));
        await Assert.ThrowsAsync<InvalidOperationException>(() => leases.FindAsync(command with { StageId = Guid.NewGuid() }, default));
    }

    [Fact]
    public async Task The_heartbeat_writes_progress_and_reports_a_cancelled_stage_as_lost()
    {
        var command = await Dispatched();
        var leases = new StageLeases(store, options);
        var lease = (await leases.TryAcquireAsync(command, default))!;
        Assert.True(await leases.HeartbeatAsync(lease, new StageProgress(0.25, """{"step":5}""", null), default));
        var stage = await store.StageAsync(command.RunId, "dataset");
        Assert.Equal(0.25, stage.Progress);
        Assert.Equal("""{"step":5}""", stage.ProgressDetail);

        await machine.CancelAsync(command.RunId, null, DateTimeOffset.UtcNow);
        Assert.False(await leases.HeartbeatAsync(lease, new StageProgress(0.5, null, null), default));
        Assert.False(await leases.StillHeldAsync(lease, default));
    }
}
