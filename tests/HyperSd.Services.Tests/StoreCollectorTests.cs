using HyperSd.Data.Entities;
using HyperSd.Services.Execution;
using HyperSd.Services.Hosting;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using HyperSd.Testing;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging.Abstractions;

namespace HyperSd.Services.Tests;

/// <summary><c>hypersd gc</c>'s collector on PostgreSQL: what a finished run no longer needs goes, a running run's and
/// every recorded result stay.</summary>
public sealed class StoreCollectorTests(PostgresDatabase database) : IClassFixture<PostgresDatabase>, IDisposable
{
    readonly TestStore store = new(database.ConnectionString);

    public void Dispose() => store.Dispose();

    void Write(string relative, string content = "x")
    {
        var full = store.Artifacts.GetFullPath(relative);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        File.WriteAllText(full, content);
    }

    [Fact]
    public async Task Gc_lists_exactly_the_removable_files_of_a_finished_run_and_its_results_still_load_after()
    {
        var options = store.WorkerOptions();
        var machine = new RunLifecycle(store, StageCatalogue.Default(), options, NullLogger<RunLifecycle>.Instance);
        var finished = await store.CreateRunAsync(TinyToy.Recipe(), options);
        var running = await store.CreateRunAsync(TinyToy.Recipe(), options);
        foreach (var run in new[] { finished, running }) await machine.StartAsync(run, DateTimeOffset.UtcNow);

        var stage = await store.StageAsync(finished, "dataset");
        var dataset = await store.AddOutputAsync(stage, ArtifactKind.Dataset, "dataset", "the dataset");
        var checkpoint = await store.AddOutputAsync(stage, ArtifactKind.Checkpoint, "checkpoints/step-0000002", "weights");
        var a1 = StageContext.OutputPrefix(finished, "dataset", 1);
        Write($"{a1}.dataset.partial-0123/shard-0.bin");                        // an import cut short
        Write($"{StageContext.OutputPrefix(finished, "dataset", 2)}stray.bin"); // a superseded attempt's unrecorded file
        Write($"{StageContext.WorkDirOf(finished, "dataset", 1)}/dataset/shard-0.bin");
        var unknown = $"runs/{Guid.NewGuid():N}";
        Write($"{unknown}/x/a1/file");
        await using (var db = store.CreateDbContext())
        {
            await db.Stages.Where(s => s.Id == stage.Id).ExecuteUpdateAsync(u => u.SetProperty(s => s.CheckpointArtifactId, checkpoint.Id));
            await db.Runs.Where(r => r.Id == finished).ExecuteUpdateAsync(u => u.SetProperty(r => r.State, RunState.Succeeded));
        }
        // a running run's scratch folder and partial import are its own business
        var runningStage = await store.StageAsync(running, "dataset");
        Write($"{StageContext.WorkDirOf(running, "dataset", 1)}/dataset/shard-0.bin");
        Write($"{StageContext.OutputPrefix(running, "dataset", 1)}.dataset.partial-4567/shard-0.bin");

        var collector = new StoreCollector(store, store.Artifacts);
        var items = await collector.FindAsync();
        Assert.Equal(new[]
        {
            ($"work/{finished:N}", Garbage.WorkFolder),
            ($"{a1}.dataset.partial-0123", Garbage.Unrecorded),
            ($"runs/{finished:N}/dataset/a2", Garbage.Unrecorded),
            (checkpoint.Path, Garbage.Checkpoint),
            (unknown, Garbage.UnknownRun),
        }.OrderBy(i => i.Item1, StringComparer.Ordinal), items.Select(i => (i.Path, i.Reason)).OrderBy(i => i.Path, StringComparer.Ordinal));
        Assert.Equal("weights".Length, items.Single(i => i.Reason == Garbage.Checkpoint).SizeBytes);
        Assert.True(items.All(i => store.Artifacts.Exists(i.Path))); // a dry run removes nothing

        await collector.RemoveAsync(items);
        Assert.Empty(await collector.FindAsync());
        Assert.All(items, i => Assert.False(store.Artifacts.Exists(i.Path)));
        await store.Artifacts.VerifyAsync(dataset.Path, dataset.Sha256); // results still load
        await using var check = store.CreateDbContext();
        Assert.False(await check.Artifacts.AnyAsync(a => a.Id == checkpoint.Id));
        Assert.Null((await store.StageAsync(finished, "dataset")).CheckpointArtifactId);
        Assert.True(store.Artifacts.Exists(StageContext.WorkDirOf(running, "dataset", 1)));
        Assert.True(store.Artifacts.Exists($"{StageContext.OutputPrefix(running, "dataset", 1)}.dataset.partial-4567"));
        Assert.Equal(StageState.Dispatched, runningStage.State);
    }
}
