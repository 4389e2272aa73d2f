using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.Stages;
using HyperSd.Testing;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace HyperSd.Services.Tests;

/// <summary>Stage consumers under store blips, over real RabbitMQ and PostgreSQL, with the orchestrator and the worker in
/// separate hosts: the worker reaches the database through a proxy the test cuts.</summary>
public sealed class BusRetryTests(PostgresDatabase database) : IClassFixture<PostgresDatabase>, IDisposable
{
    readonly TestStore store = new(database.ConnectionString);
    readonly RabbitMqVirtualHost vhost = new();
    readonly ManualResetEventSlim release = new();

    public void Dispose()
    {
        release.Set();
        vhost.Dispose();
        store.Dispose();
    }

    IHost StartHost(StageCatalogue catalogue, string role, string postgres)
    {
        var options = new TestStore(postgres, migrate: false, artifactRoot: store.Artifacts.Root).WorkerOptions(o =>
        {
            o.WorkerId = role;
            o.Roles = [role];
            o.Transport = WorkerOptions.RabbitMqTransport;
            o.RabbitMq = RabbitMqOptions.FromUri(vhost.Uri.ToString());
            o.MigrateOnStart = false;
            o.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
            o.LeaseTimeout = TimeSpan.FromSeconds(15);
            o.ReconcileInterval = TimeSpan.FromSeconds(1);
            o.DispatchTimeout = TimeSpan.FromSeconds(60);
        }, catalogue);
        return TestHosts.Start(options, catalogue);
    }

    [Fact]
    public async Task Transient_store_errors_on_the_command_and_on_a_duplicate_while_it_runs_are_retried_and_the_run_completes()
    {
        var catalogue = new StageCatalogue().Add(new HangStage(1, release));
        using var proxy = new TcpProxy(store.Options.ConnectionString);
        using var orchestrator = StartHost(catalogue, Roles.Orchestrator, store.Options.ConnectionString);
        using var worker = StartHost(catalogue, "hanger", proxy.ConnectionString(store.Options.ConnectionString));

        // the only delivery of the command meets a store that is down for 2 s
        proxy.Cut();
        var planned = Runs.RunSubmission.Plan(catalogue, TinyToy.Recipe(), "tiny", 3);
        var runId = await orchestrator.Services.GetRequiredService<Runs.RunSubmission>().SubmitAsync(planned);
        await Task.Delay(TimeSpan.FromSeconds(2));
        proxy.Restore();
        await store.WaitForAsync(runId, r => r.Stages[0].State == StageState.Running, "the stage to run");

        // a duplicate of the command arrives while attempt 1 runs, and its consumer meets the store down too
        proxy.Cut();
        var command = await orchestrator.Services.GetRequiredService<RunLifecycle>().CurrentCommandAsync(runId, "hang");
        await (await orchestrator.Services.GetRequiredService<IBus>().GetSendEndpoint(Roles.Queue("hanger"))).Send(command);
        await Task.Delay(TimeSpan.FromSeconds(2));
        proxy.Restore();
        await Task.Delay(TimeSpan.FromSeconds(2));
        release.Set();

        var run = await store.WaitForAsync(runId, r => r.State is not (RunState.Pending or RunState.Running), "the run to end");
        await worker.StopAsync();
        await orchestrator.StopAsync();
        Assert.True(run.State == RunState.Succeeded, $"{run.State}: {run.Error}");
        await using var db = store.CreateDbContext();
        var attempt = Assert.Single(await db.StageAttempts.Where(a => a.StageId == run.Stages[0].Id).ToListAsync());
        Assert.Equal((1, AttemptOutcome.Succeeded), (attempt.Attempt, attempt.Outcome!.Value));
    }
}
