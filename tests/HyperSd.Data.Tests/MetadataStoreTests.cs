using HyperSd.Data.Entities;
using HyperSd.Testing;
using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Data.Tests;

/// <summary>The same behaviour checked against each provider, each on a freshly migrated database.</summary>
public abstract class MetadataStoreTests : IAsyncLifetime
{
    // Whole microseconds: Postgres stores timestamps at that precision.
    private static readonly DateTimeOffset T0 = new(2026, 3, 4, 5, 6, 7, 890, TimeSpan.Zero);

    protected abstract MetadataStoreOptions Options { get; }

    public Task InitializeAsync() => MetadataStore.MigrateAsync(Options);

    public virtual Task DisposeAsync() => Task.CompletedTask;

    private MetadataDbContext NewContext() => MetadataStore.CreateContext(Options);

    private sealed record Seeded(Guid RunId, string RunName, Guid DatasetStageId, Guid TrainStageId, Guid DatasetArtifactId, Guid CheckpointId);

    private async Task<Seeded> SeedAsync()
    {
        await using var db = NewContext();
        var recipe = new StoredRecipe { Id = Guid.NewGuid(), Name = "toy", Yaml = "name: toy\n", Sha256 = new string('a', 64), CreatedAt = T0 };
        var run = new Run { Id = Guid.NewGuid(), RecipeId = recipe.Id, Name = $"run-{Guid.NewGuid():N}", State = RunState.Running, CurrentStage = "tscd-k8", CreatedAt = T0, StartedAt = T0 };
        var datasetStage = new Stage { Id = Guid.NewGuid(), Name = "dataset", Kind = "prepare-dataset", Index = 0, Role = "dataset-prep", State = StageState.Succeeded, Attempt = 1, MaxAttempts = 3, Progress = 1, FinishedAt = T0.AddMinutes(1) };
        var train = new Stage
        {
            Id = Guid.NewGuid(), Name = "tscd-k8", Kind = "train-segment-stage", Index = 1, Role = "segment-consistency", State = StageState.Running, Attempt = 1, MaxAttempts = 3,
            LeaseOwner = "worker-a", LeaseHeartbeatAt = T0.AddMinutes(2), LeaseExpiresAt = T0.AddMinutes(3), Progress = 0.25,
            ProgressDetail = "{\"step\": 250}", SettingsJson = "{\"k\": 8}",
            Attempts = [new StageAttempt { Id = Guid.NewGuid(), Attempt = 1, Owner = "worker-a", StartedAt = T0.AddMinutes(1) }],
        };
        var evaluate = new Stage { Id = Guid.NewGuid(), Name = "evaluate", Kind = "evaluate-model", Index = 2, Role = "evaluator", State = StageState.Pending, MaxAttempts = 3 };
        run.Stages.AddRange([evaluate, train, datasetStage]);
        var datasetArtifact = new Artifact { Id = Guid.NewGuid(), Kind = ArtifactKind.Dataset, Path = $"{run.Id}/dataset", Sha256 = new string('b', 64), SizeBytes = 1000, RunId = run.Id, StageId = datasetStage.Id, CreatedAt = T0 };
        var checkpoint = new Artifact
        {
            Id = Guid.NewGuid(), Kind = ArtifactKind.Checkpoint, Path = $"{run.Id}/tscd-k8/step-250", Sha256 = new string('c', 64), SizeBytes = 5000, RunId = run.Id, StageId = train.Id, CreatedAt = T0,
            Inputs = [new ArtifactInput { InputArtifactId = datasetArtifact.Id }],
        };
        db.AddRange(recipe, run, datasetArtifact, checkpoint);
        db.Add(new Dataset { Id = Guid.NewGuid(), RunId = run.Id, StageId = datasetStage.Id, Source = "toy", Count = 64, BadCount = 2, ArtifactId = datasetArtifact.Id, CreatedAt = T0 });
        db.Add(Evaluation(run.Id, evaluate.Id, "fid", 12.5));
        db.Add(Evaluation(run.Id, evaluate.Id, "clip", 0.31));
        await db.SaveChangesAsync();

        train.CheckpointArtifactId = checkpoint.Id;
        await db.SaveChangesAsync();
        return new Seeded(run.Id, run.Name, datasetStage.Id, train.Id, datasetArtifact.Id, checkpoint.Id);
    }

    private static Evaluation Evaluation(Guid runId, Guid stageId, string metric, double value) => new()
    {
        Id = Guid.NewGuid(), RunId = runId, StageId = stageId, Model = "tscd-k8", Sampler = "tcd", Steps = 4, Metric = metric, Value = value, CreatedAt = T0,
    };

    [Fact]
    public async Task Round_trips_a_run_with_stages_attempts_artifacts_lineage_and_evaluations()
    {
        var seeded = await SeedAsync();
        await MetadataStore.MigrateAsync(Options); // already current: a no-op

        await using var db = NewContext();
        var run = await db.Runs.Include(r => r.Stages).ThenInclude(s => s.Attempts).SingleAsync(r => r.Id == seeded.RunId);
        Assert.Equal(RunState.Running, run.State);
        Assert.Equal(T0, run.StartedAt);
        Assert.Equal(TimeSpan.Zero, run.UpdatedAt.Offset);
        Assert.True(run.UpdatedAt > T0);
        Assert.Equal(["dataset", "tscd-k8", "evaluate"], run.Stages.OrderBy(s => s.Index).Select(s => s.Name));

        var train = run.Stages.Single(s => s.Id == seeded.TrainStageId);
        Assert.Equal(StageState.Running, train.State);
        Assert.Equal(seeded.CheckpointId, train.CheckpointArtifactId);
        Assert.Equal(0.25, train.Progress);
        Assert.Equal(T0.AddMinutes(3), train.LeaseExpiresAt);
        Assert.Equal(1, train.Version); // bumped by the checkpoint update
        var attempt = Assert.Single(train.Attempts);
        Assert.Null(attempt.Outcome);

        // The orchestrator's query for lost leases compares timestamps in the database.
        var expired = await db.Stages.Where(s => s.RunId == seeded.RunId && s.LeaseExpiresAt < T0.AddMinutes(5)).Select(s => s.Name).ToListAsync();
        Assert.Equal(["tscd-k8"], expired);

        var checkpoint = await db.Artifacts.Include(a => a.Inputs).SingleAsync(a => a.Id == seeded.CheckpointId);
        Assert.Equal(seeded.DatasetArtifactId, Assert.Single(checkpoint.Inputs).InputArtifactId);
        var dataset = await db.Datasets.SingleAsync(d => d.RunId == seeded.RunId);
        Assert.Equal((64, 2, seeded.DatasetArtifactId), (dataset.Count, dataset.BadCount, dataset.ArtifactId));

        var metrics = await db.Evaluations.Where(e => e.RunId == seeded.RunId).OrderBy(e => e.Metric).Select(e => new { e.Metric, e.Value }).ToListAsync();
        Assert.Equal([new { Metric = "clip", Value = 0.31 }, new { Metric = "fid", Value = 12.5 }], metrics);

        // Enums are stored by name, so the tables read well from SQL.
        var state = await db.Database.SqlQuery<string>($"SELECT state AS \"Value\" FROM runs WHERE name = {seeded.RunName}").SingleAsync();
        Assert.Equal("Running", state);
    }

    [Fact]
    public async Task A_redelivered_evaluation_cannot_duplicate_its_row()
    {
        var seeded = await SeedAsync();
        await using var db = NewContext();
        var evaluateStage = await db.Stages.SingleAsync(s => s.RunId == seeded.RunId && s.Name == "evaluate");
        db.Add(Evaluation(seeded.RunId, evaluateStage.Id, "fid", 13.0));

        await Assert.ThrowsAsync<DbUpdateException>(() => db.SaveChangesAsync());
    }

    [Fact]
    public async Task A_stage_update_based_on_a_stale_read_is_rejected()
    {
        var seeded = await SeedAsync();
        await using var first = NewContext();
        await using var second = NewContext();
        var a = await first.Stages.SingleAsync(s => s.Id == seeded.TrainStageId);
        var b = await second.Stages.SingleAsync(s => s.Id == seeded.TrainStageId);

        a.LeaseOwner = "worker-b";
        await first.SaveChangesAsync();
        b.State = StageState.Failed;
        await Assert.ThrowsAsync<DbUpdateConcurrencyException>(() => second.SaveChangesAsync());

        await using var check = NewContext();
        var stored = await check.Stages.SingleAsync(s => s.Id == seeded.TrainStageId);
        Assert.Equal(("worker-b", StageState.Running, 2), (stored.LeaseOwner, stored.State, stored.Version));
    }
}

public sealed class SqliteMetadataStoreTests : MetadataStoreTests
{
    private readonly string file = Path.Combine(Path.GetTempPath(), $"hypersd-{Guid.NewGuid():N}.db");

    protected override MetadataStoreOptions Options => new() { Provider = "sqlite", ConnectionString = $"Data Source={file}" };

    public override Task DisposeAsync()
    {
        SqliteConnection.ClearAllPools();
        File.Delete(file);
        return Task.CompletedTask;
    }
}

public sealed class PostgresMetadataStoreTests(PostgresDatabase database) : MetadataStoreTests, IClassFixture<PostgresDatabase>
{
    protected override MetadataStoreOptions Options => new() { Provider = "postgres", ConnectionString = database.ConnectionString };
}

public sealed class MetadataStoreOptionsTests
{
    [Fact]
    public void An_unknown_provider_is_named_with_the_allowed_values()
    {
        var error = Assert.Throws<ArgumentException>(() => MetadataStore.CreateContext(new() { Provider = "mysql", ConnectionString = "Server=x" }));
        Assert.Contains("Provider", error.Message);
        Assert.Contains("'mysql'", error.Message);
        Assert.Contains("'sqlite'", error.Message);
        Assert.Contains("'postgres'", error.Message);
    }
}
