using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Services.Execution;
using HyperSd.Services.Hosting;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using HyperSd.Testing;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Tests;

/// <summary>A migrated metadata store (SQLite in a temp directory, or a given PostgreSQL database) and an artifact folder in
/// a temp directory.</summary>
public sealed class TestStore : IDbContextFactory<MetadataDbContext>, IDisposable
{
    public string Root { get; } = Directory.CreateTempSubdirectory("hypersd-workers-").FullName;
    public MetadataStoreOptions Options { get; }
    public FileSystemArtifactStore Artifacts { get; }

    public TestStore() : this(null)
    {
    }

    /// <summary>On PostgreSQL when <paramref name="postgres"/> (a connection string) is given; migrated unless
    /// <paramref name="migrate"/> is false (a second view of a store already migrated).</summary>
    public TestStore(string? postgres, bool migrate = true, string? artifactRoot = null)
    {
        Options = postgres is null
            ? new MetadataStoreOptions { Provider = MetadataStoreOptions.Sqlite, ConnectionString = $"Data Source={Path.Combine(Root, "metadata.db")}" }
            : new MetadataStoreOptions { Provider = MetadataStoreOptions.Postgres, ConnectionString = postgres };
        if (migrate) MetadataStore.MigrateAsync(Options).GetAwaiter().GetResult();
        Artifacts = new FileSystemArtifactStore(artifactRoot ?? Path.Combine(Root, "artifacts"));
    }

    public WorkerOptions WorkerOptions(Action<WorkerOptions>? change = null, StageCatalogue? catalogue = null)
    {
        var o = new WorkerOptions { Store = Options, ArtifactRoot = Artifacts.Root, WorkerId = "test-worker", Inputs = TestInputs.Temp };
        change?.Invoke(o);
        return o.Validate(catalogue);
    }

    /// <summary>A tiny run's worker on the embedded host: every role of <paramref name="catalogue"/>, quick heartbeats and
    /// reconciles, the toy reward's recognizer from <paramref name="recognizer"/> (null: the worker's default).</summary>
    public WorkerOptions TinyRunOptions(StageCatalogue catalogue, string? recognizer = null) => WorkerOptions(o =>
    {
        o.Roles = [.. catalogue.Roles];
        o.ToyRecognizerDir = recognizer;
        o.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
        o.ReconcileInterval = TimeSpan.FromSeconds(1);
    }, catalogue);

    public MetadataDbContext CreateDbContext() => MetadataStore.CreateContext(Options);

    /// <summary>Stores a recipe, a pending run and its stages.</summary>
    public async Task<Guid> CreateRunAsync(string yaml, WorkerOptions options)
    {
        var planned = RunSubmission.Plan(StageCatalogue.Default(), yaml, "test recipe", options);
        await RunSubmission.StoreAsync(this, Artifacts, planned);
        return planned.Run.Id;
    }

    public async Task<Run> RunAsync(Guid runId)
    {
        await using var db = CreateDbContext();
        return await db.Runs.AsNoTracking().Include(r => r.Stages.OrderBy(s => s.Index)).SingleAsync(r => r.Id == runId);
    }

    public async Task<Stage> StageAsync(Guid runId, string name) => (await RunAsync(runId)).Stages.Single(s => s.Name == name);

    /// <summary>Writes a file into the store and records it as an output of the stage's current attempt.</summary>
    public async Task<Artifact> AddOutputAsync(Stage stage, ArtifactKind kind, string name, string content = "data")
    {
        var source = Path.Combine(Root, $"src-{Guid.NewGuid():N}");
        await File.WriteAllTextAsync(source, content);
        var path = StageContext.OutputPrefix(stage.RunId, stage.Name, stage.Attempt) + name;
        // a trained LoRA carries its k and the step count it is for, as the training stages record them
        int? k = StageCatalogue.Default().ReadSettings(stage) switch
        {
            SegmentStageSettings t => t.Config.Segments,
            RewardScorer.ReflStageSettings r => r.Config.StudentSteps,
            DistributionMatching.DmdStageSettings => 1,
            _ => null,
        };
        var info = await Artifacts.ImportAsync(source, path);
        var artifact = new Artifact
        {
            Id = Guid.NewGuid(), Kind = kind, Path = path, Sha256 = info.Sha256, SizeBytes = info.SizeBytes, RunId = stage.RunId,
            StageId = stage.Id, StageKind = stage.Kind, Attempt = stage.Attempt, Segments = k, Steps = k, CreatedAt = DateTimeOffset.UtcNow,
        };
        await using var db = CreateDbContext();
        db.Artifacts.Add(artifact);
        await db.SaveChangesAsync();
        return artifact;
    }

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try { Directory.Delete(Root, true); } catch (IOException) { }
    }
}
