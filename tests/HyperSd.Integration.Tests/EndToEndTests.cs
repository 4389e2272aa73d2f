using HyperSd.Testing;
using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.DatasetPrep;
using HyperSd.Services.Evaluator;
using HyperSd.Services.Execution;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using HyperSd.Services.TeacherTrajectories;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace HyperSd.Integration.Tests;

[Collection(nameof(Integration))]
public sealed class EndToEndTests(ITestOutputHelper output)
{
    /// <summary>
    /// The tiny toy recipe over RabbitMQ and PostgreSQL with every role in its own hypersd-worker process; then the same
    /// recipe embedded (one process, in-memory transport, SQLite) for the per-stage timing comparison it prints.
    /// </summary>
    [Fact]
    public async Task A_toy_run_with_each_role_in_its_own_process_completes_over_RabbitMQ_and_PostgreSQL()
    {
        await using var deployment = new Deployment();
        var workers = await deployment.StartWorkersAsync();
        Assert.Equal(StageCatalogue.Default().Roles.Count, workers.Values.Select(w => w.Id).Distinct().Count());

        var runId = await deployment.SubmitAsync();
        // seven role processes share the CI machine's cores: a loaded machine needs more than the default 3 minutes
        await deployment.WaitForEndAsync(runId, TimeSpan.FromMinutes(8));
        var artifacts = await deployment.AssertCompleteAsync(runId);

        var run = await deployment.RunAsync(runId);
        var attempts = await deployment.AttemptsAsync(run);
        // a healthy run: one lease per stage, each held by the process of the stage's role
        Assert.All(run.Stages, s => Assert.Equal(1, s.Attempt));
        Assert.Equal(run.Stages.Count, attempts.Count);
        Assert.All(run.Stages, s => Assert.Equal(workers[s.Role].Name, attempts.Single(a => a.StageId == s.Id).Owner));
        // every file the run left in the artifact store is a recorded artifact (no orphans, no temp files)
        deployment.AssertStoredAreRecorded(runId, artifacts.Select(a => a.Path));

        var distributed = StageTimings.Of(run, attempts);
        deployment.KillWorkers(); // idle, but they would share the cores with the embedded run
        var (embeddedRun, embedded) = await RunEmbeddedAsync(deployment);
        var table = StageTimings.Markdown("embedded", embeddedRun, embedded, "RabbitMQ+Postgres", run, distributed);
        output.WriteLine("Tiny toy recipe, per stage: wall = lease → finish of the succeeded attempt (worker clock); gap before = " +
                         "the previous stage's finish → this stage's lease (orchestration overhead). Workers: 1 torch thread each.\n");
        output.WriteLine(table);
        if (Environment.GetEnvironmentVariable("HYPERSD_TIMINGS_OUT") is { Length: > 0 } file)
            await File.WriteAllTextAsync(file, table);
    }

    /// <summary>The same recipe with every role in this process on the embedded default (in-memory bus, SQLite).</summary>
    static async Task<(Run, List<StageTiming>)> RunEmbeddedAsync(Deployment deployment)
    {
        var root = Path.Combine(deployment.Root, "embedded");
        var store = new MetadataStoreOptions { Provider = MetadataStoreOptions.Sqlite, ConnectionString = $"Data Source={Path.Combine(root, "metadata.db")}" };
        var options = new WorkerOptions
        {
            Store = store, ArtifactRoot = Path.Combine(root, "artifacts"), WorkerId = "embedded", ToyRecognizerDir = deployment.Recognizer,
            Inputs = TestInputs.Temp,
            HeartbeatInterval = TimeSpan.FromSeconds(0.5), ReconcileInterval = TimeSpan.FromSeconds(1),
        }.Validate();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHyperSdWorkers(options);
        using var host = builder.Build();
        int threads = TorchSharp.torch.get_num_threads();
        TorchSharp.torch.set_num_threads(1); // as each worker process
        try
        {
            await host.StartAsync();
            var recipe = Path.Combine(root, "tiny.yaml");
            await File.WriteAllTextAsync(recipe, TinyToy.Recipe(deployment.Teacher));
            var runId = await host.Services.GetRequiredService<RunSubmission>().SubmitAsync(recipe);
            var deadline = DateTime.UtcNow.AddMinutes(5);
            while (true)
            {
                await using var db = MetadataStore.CreateContext(store);
                var run = await db.Runs.AsNoTracking().Include(r => r.Stages).SingleAsync(r => r.Id == runId);
                if (run.State is RunState.Succeeded)
                {
                    var ids = run.Stages.Select(s => s.Id).ToList();
                    var attempts = await db.StageAttempts.AsNoTracking().Where(a => ids.Contains(a.StageId)).ToListAsync();
                    await host.StopAsync();
                    return (run, StageTimings.Of(run, attempts));
                }
                Assert.True(run.State == RunState.Running || run.State == RunState.Pending, $"the embedded run ended {run.State}: {run.Error}");
                Assert.True(DateTime.UtcNow < deadline, "the embedded run did not finish within 5 minutes");
                await Task.Delay(100);
            }
        }
        finally
        {
            TorchSharp.torch.set_num_threads(threads);
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        }
    }
}
