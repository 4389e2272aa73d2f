using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Hosting;
using HyperSd.Services.Stages;
using HyperSd.Testing;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace HyperSd.Services.Tests;

/// <summary>A test stage kind whose first <see cref="HangSettings.HangAttempts"/> attempts hang in a call that never looks
/// at its cancellation token (a stalled file system, a hung device call), after one progress report.</summary>
public sealed record HangSettings(int HangAttempts);

public sealed class HangStage(int hangAttempts, ManualResetEventSlim release) : StageKind<HangSettings>
{
    public const string Kind = "hang";
    public override string Name => Kind;
    public override string Role => "hanger";

    public override IEnumerable<PlannedStage> Plan(Recipe recipe) => [new("hang", new HangSettings(hangAttempts))];

    protected override async Task ExecuteAsync(StageContext stage, HangSettings settings)
    {
        stage.Report(0.1);
        if (stage.Attempt <= settings.HangAttempts) release.Wait();
        var report = Path.Combine(stage.WorkDir, "done.txt");
        await File.WriteAllTextAsync(report, $"attempt {stage.Attempt}");
        await stage.AddOutputAsync(ArtifactKind.Report, report, "done.txt");
    }
}

/// <summary>Progress-based liveness on the embedded host over PostgreSQL: a hung attempt is abandoned and re-dispatched,
/// and cancel frees a hung attempt's device slot. The worker has one device slot, so the next attempt can run only once
/// the hung one has given it back.</summary>
public sealed class LivenessTests(PostgresDatabase database) : IClassFixture<PostgresDatabase>, IDisposable
{
    readonly TestStore store = new(database.ConnectionString);
    readonly ManualResetEventSlim release = new();

    public void Dispose()
    {
        release.Set(); // lets the abandoned threads end
        store.Dispose();
    }

    (IHost, Guid) Start(int hangAttempts)
    {
        var catalogue = new StageCatalogue().Add(new HangStage(hangAttempts, release));
        var options = store.WorkerOptions(o =>
        {
            o.Roles = [.. catalogue.Roles];
            o.HeartbeatInterval = TimeSpan.FromMilliseconds(200);
            o.LeaseTimeout = TimeSpan.FromSeconds(2);
            o.DispatchTimeout = TimeSpan.FromSeconds(1);
            o.ReconcileInterval = TimeSpan.FromMilliseconds(300);
            o.ProgressTimeouts[HangStage.Kind] = TimeSpan.FromSeconds(2);
        }, catalogue);
        var host = TestHosts.Start(options, catalogue);
        var planned = Runs.RunSubmission.Plan(catalogue, TinyToy.Recipe(), "tiny", options.MaxAttempts);
        var runId = host.Services.GetRequiredService<Runs.RunSubmission>().SubmitAsync(planned).GetAwaiter().GetResult();
        return (host, runId);
    }

    [Fact]
    public async Task A_hung_attempt_is_abandoned_and_the_stage_re_dispatched_after_the_no_progress_limit()
    {
        var (host, runId) = Start(hangAttempts: 1);
        using var _ = host;
        var started = DateTime.UtcNow;
        var run = await store.WaitForAsync(runId, r => r.State is not (RunState.Pending or RunState.Running), "the run to end");
        var took = DateTime.UtcNow - started;
        await host.StopAsync();

        Assert.Equal(RunState.Succeeded, run.State);
        await using var db = store.CreateDbContext();
        var stage = run.Stages.Single();
        var attempts = await db.StageAttempts.Where(a => a.StageId == stage.Id).OrderBy(a => a.Attempt).ToListAsync();
        Assert.Equal([(1, AttemptOutcome.Lost), (2, AttemptOutcome.Succeeded)], attempts.Select(a => (a.Attempt, a.Outcome!.Value)));
        Assert.Contains("no progress", attempts[0].Error);
        var output = await db.Artifacts.SingleAsync(a => a.StageId == stage.Id);
        Assert.Equal(2, output.Attempt);
        Assert.True(took < TimeSpan.FromSeconds(30), $"took {took}");
    }

    [Fact]
    public async Task Cancel_takes_effect_on_a_hung_attempt_and_frees_its_device()
    {
        var (host, runId) = Start(hangAttempts: int.MaxValue);
        using var _ = host;
        await store.WaitForAsync(runId, r => r.Stages[0].State == StageState.Running, "the stage to run");
        var slots = host.Services.GetRequiredService<DeviceSlots>();
        Assert.Null(slots.TryAcquire()); // the hung attempt holds the only slot
        await (await host.Services.GetRequiredService<IBus>().GetSendEndpoint(Roles.Queue(Roles.Orchestrator)))
            .Send(new CancelRun(runId, "operator"));
        await store.WaitForAsync(runId, r => r.State == RunState.Cancelled, "the run to be cancelled");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        string? slot;
        while ((slot = slots.TryAcquire()) is null && DateTime.UtcNow < deadline) await Task.Delay(100);
        Assert.Equal("cpu", slot);
        slots.Release(slot!);
        await host.StopAsync();
    }
}
