using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Workers.Hosting;
using HyperSd.Workers.Runs;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Workers.Tests;

/// <summary>A migrated SQLite metadata store and an artifact folder in a temp directory.</summary>
public sealed class TestStore : IDbContextFactory<MetadataDbContext>, IDisposable
{
    public string Root { get; } = Directory.CreateTempSubdirectory("hypersd-workers-").FullName;
    public MetadataStoreOptions Options { get; }
    public FileSystemArtifactStore Artifacts { get; }

    public TestStore()
    {
        Options = new MetadataStoreOptions { Provider = MetadataStoreOptions.Sqlite, ConnectionString = $"Data Source={Path.Combine(Root, "metadata.db")}" };
        MetadataStore.MigrateAsync(Options).GetAwaiter().GetResult();
        Artifacts = new FileSystemArtifactStore(Path.Combine(Root, "artifacts"));
    }

    public WorkerOptions WorkerOptions(Action<WorkerOptions>? change = null)
    {
        var o = new WorkerOptions { Store = Options, ArtifactRoot = Artifacts.Root, WorkerId = "test-worker" };
        change?.Invoke(o);
        return o.Validate();
    }

    public MetadataDbContext CreateDbContext() => MetadataStore.CreateContext(Options);

    /// <summary>Stores a recipe, a pending run and its stages.</summary>
    public Task<Guid> CreateRunAsync(string yaml, WorkerOptions options) =>
        RunSubmission.CreateAsync(this, yaml, "test recipe", options.MaxAttempts);

    public async Task<Run> RunAsync(Guid runId)
    {
        await using var db = CreateDbContext();
        return await db.Runs.AsNoTracking().Include(r => r.Stages.OrderBy(s => s.Index)).SingleAsync(r => r.Id == runId);
    }

    public async Task<Stage> StageAsync(Guid runId, string name) => (await RunAsync(runId)).Stages.Single(s => s.Name == name);

    /// <summary>Writes a file into the store and records it as an output of the stage's current attempt.</summary>
    public async Task<Artifact> AddOutputAsync(Stage stage, string kind, string name, string content = "data")
    {
        var source = Path.Combine(Root, $"src-{Guid.NewGuid():N}");
        await File.WriteAllTextAsync(source, content);
        var path = RunPlan.OutputPrefix(stage.RunId, stage.Name, stage.Attempt) + name;
        var info = await Artifacts.ImportAsync(source, path);
        var artifact = new Artifact
        {
            Id = Guid.NewGuid(), Kind = kind, Path = path, Sha256 = info.Sha256, SizeBytes = info.SizeBytes, RunId = stage.RunId,
            StageId = stage.Id, CreatedAt = DateTimeOffset.UtcNow,
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

public static class TestRecipes
{
    /// <summary>A tiny toy recipe: a few scenes, trajectories and steps per stage (TSCD k = 2 → 1).</summary>
    public static string Tiny(string? teacherDir = null) => $$"""
        name: tiny
        seed: 0
        model:
          source: toy
        {{(teacherDir is null ? "" : $"  path: {teacherDir}")}}
        dataset:
          source: toy
          count: 12
          seed: 1
          shard_size: 8
        trajectories:
          count: 24
          solver_steps: 50
          guidance_min: 1.5
          guidance_max: 2.5
          batch_size: 12
          empty_prompt_probability: 0
        tscd:
          segments: [2, 1]
          steps_per_stage: 4
          batch_size: 4
          learning_rate: 1.0e-3
          lora: {rank: 4, alpha: 4}
          weights:
            2: {mse: 1.0, adversarial: 0.0}
            1: {mse: 0.8, adversarial: 0.1}
          discriminator_learning_rate: 1.0e-4
          checkpoint_every: 2
        evaluation:
          steps: [1, 2]
          samplers: [ddim-trailing, tcd]
          tcd_eta: 0.3
          prompts: 6
          teacher_steps: 3
          teacher_guidance: 3.0
          real_images: 16
          batch_size: 6
          grid_prompts: 2
        """;
}
