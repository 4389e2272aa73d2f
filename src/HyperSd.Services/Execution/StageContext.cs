using System.Text.Json;
using System.Text.Json.Serialization;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Execution;

/// <summary>What one leased stage attempt works with: its verified inputs, device and scratch folder; where it reports
/// progress and stores outputs (with their typed metadata and lineage to its inputs). Its settings are its kind's.</summary>
public sealed class StageContext(StageLease lease, Stage stage, IReadOnlyList<Artifact> inputs, string device, IArtifactStore store,
    IDbContextFactory<MetadataDbContext> dbs, StageLeases leases, WorkerOptions options, ILogger logger, CancellationToken cancellation)
{
    readonly List<Guid> outputs = [];
    StageProgress progress = new(0, null, stage.CheckpointArtifactId);

    public StageLease Lease => lease;
    public Guid RunId => lease.RunId;
    public Guid StageId => lease.StageId;
    public string Stage => lease.Stage;
    public int Attempt => lease.Attempt;
    /// <summary>The stage's kind in the catalogue.</summary>
    public string Kind => stage.Kind;
    /// <summary>The last checkpoint an earlier attempt recorded, if any.</summary>
    public Guid? CheckpointArtifactId => stage.CheckpointArtifactId;
    /// <summary>The TorchSharp device name this attempt runs on.</summary>
    public string Device => device;
    public WorkerOptions Options => options;
    public ILogger Logger => logger;
    /// <summary>Cancelled when the lease is lost (run cancelled, attempt superseded) or the worker stops.</summary>
    public CancellationToken Cancellation => cancellation;
    public IReadOnlyList<Guid> Outputs => outputs;
    public IDbContextFactory<MetadataDbContext> Db => dbs;
    public IArtifactStore Store => store;

    /// <summary>This attempt's scratch folder (created).</summary>
    public string WorkDir
    {
        get
        {
            var dir = store.GetFullPath(WorkDirOf(RunId, Stage, Attempt));
            Directory.CreateDirectory(dir);
            return dir;
        }
    }

    /// <summary>An attempt's scratch folder (relative to the artifact root), its own: an attempt still running after the
    /// next one was dispatched (a worker cut off from the store) never writes into the files of its successor, which
    /// resumes from the checkpoint artifacts recorded in the store instead.</summary>
    public static string WorkDirOf(Guid runId, string stage, int attempt) => $"work/{runId:N}/{stage}/a{attempt}";

    /// <summary>Where an attempt's outputs live in the artifact store; one folder per attempt, so a retry never meets
    /// a half-finished predecessor's files.</summary>
    public static string OutputPrefix(Guid runId, string stage, int attempt) => $"runs/{runId:N}/{stage}/a{attempt}/";

    /// <summary>The one input of <paramref name="kind"/>.</summary>
    public Artifact Input(ArtifactKind kind)
    {
        var found = inputs.Where(a => a.Kind == kind).ToList();
        return found.Count == 1 ? found[0]
            : throw new InvalidDataException($"stage {Stage}: expected one '{kind}' input artifact, got {found.Count} " +
                                             $"(inputs: {string.Join(", ", inputs.Select(a => $"{a.Kind} {a.Path}"))})");
    }

    public Artifact? OptionalInput(ArtifactKind kind) => inputs.SingleOrDefault(a => a.Kind == kind);

    /// <summary>Every input of <paramref name="kind"/>, in the order of the stages that made them.</summary>
    public IReadOnlyList<Artifact> InputsOf(ArtifactKind kind) => inputs.Where(a => a.Kind == kind).ToList();

    public string PathOf(Artifact artifact) => store.GetFullPath(artifact.Path);

    /// <summary>Progress for the next heartbeat: a fraction and a detail object (serialised as snake_case JSON).</summary>
    public void Report(double fraction, object? detail = null)
    {
        var json = detail is null ? null : JsonSerializer.Serialize(detail, DetailJson);
        progress = progress with { Fraction = fraction, DetailJson = json, Reports = progress.Reports + 1 };
    }

    public StageProgress Progress => progress;

    // a rate over a zero interval is infinite: written as "Infinity" rather than failing the stage
    static readonly JsonSerializerOptions DetailJson = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Imports a file or folder as an output of this attempt (atomic, hashed) and records it with its lineage and
    /// typed metadata: TSCD's k (<paramref name="segments"/>) and the step count a fixed-step LoRA is for.</summary>
    public async Task<Guid> AddOutputAsync(ArtifactKind kind, string sourcePath, string name, int? segments = null, int? steps = null)
    {
        var id = await ImportAsync(kind, sourcePath, OutputPrefix(RunId, Stage, Attempt) + name, segments, steps);
        outputs.Add(id);
        return id;
    }

    /// <summary>Imports a checkpoint (an immutable copy, under this attempt's outputs) and points the stage at it.</summary>
    public async Task<Guid> AddCheckpointAsync(string sourcePath, string name)
    {
        var path = $"{OutputPrefix(RunId, Stage, Attempt)}checkpoints/{name}";
        var id = await ImportAsync(ArtifactKind.Checkpoint, sourcePath, path, null, null);
        progress = progress with { CheckpointArtifactId = id, Reports = progress.Reports + 1 };
        return id;
    }

    /// <summary>Saves what <paramref name="change"/> adds to the store only while this attempt still holds its lease, in
    /// the transaction that checks it (<see cref="StageLeases.WriteFencedAsync"/>); throws <see cref="LeaseLostException"/>
    /// when it does not. Every result a stage records goes through here.</summary>
    public Task<T> WriteFencedAsync<T>(Func<MetadataDbContext, Task<T>> change) =>
        leases.WriteFencedAsync(lease, progress, change, logger, cancellation);

    async Task<Guid> ImportAsync(ArtifactKind kind, string sourcePath, string path, int? segments, int? steps)
    {
        // a superseded attempt copies nothing into the store (the fenced insert below would refuse it anyway)
        if (!await StoreRetry.RunAsync(() => leases.StillHeldAsync(lease, cancellation), logger, cancellation))
            throw new LeaseLostException(lease);
        var info = await store.ImportAsync(sourcePath, path, cancellation);
        var (id, added) = await WriteFencedAsync(async db =>
        {
            var existing = await db.Artifacts.SingleOrDefaultAsync(a => a.Path == path, cancellation);
            if (existing is not null) return (existing.Id, false);
            var artifact = new Artifact
            {
                Id = Guid.NewGuid(), Kind = kind, Path = path, Sha256 = info.Sha256, SizeBytes = info.SizeBytes,
                RunId = RunId, StageId = StageId, StageKind = Kind, Attempt = Attempt, Segments = segments, Steps = steps,
                CreatedAt = options.Clock.GetUtcNow(),
            };
            artifact.Inputs = inputs.Select(i => new ArtifactInput { ArtifactId = artifact.Id, InputArtifactId = i.Id }).ToList();
            db.Artifacts.Add(artifact);
            return (artifact.Id, true);
        });
        if (added)
            logger.LogInformation("stored {Kind} artifact {Path} ({Bytes} bytes, sha256 {Sha256})",
                kind, path, info.SizeBytes, info.Sha256);
        return id;
    }
}

/// <summary>Records a trainer's checkpoints as the stage's checkpoint artifacts as training goes. A trainer saves step s − 1's
/// checkpoint before step s and then waits in its progress callback, where <see cref="AfterStep"/> runs: the folder is whole.</summary>
public sealed class CheckpointImporter(StageContext stage, string checkpointDir, int every)
{
    int imported = -1;

    /// <param name="step">The step just reported (1-based).</param>
    public void AfterStep(int step)
    {
        int saved = step - 1;
        if (saved <= 0 || saved % every != 0 || saved == imported || !Directory.Exists(checkpointDir)) return;
        stage.AddCheckpointAsync(checkpointDir, $"step-{saved:D7}").GetAwaiter().GetResult();
        imported = saved;
    }
}

public static class StageCheckpoints
{
    /// <summary>Puts the stage's newest usable checkpoint into <paramref name="target"/> (an empty work folder of a new
    /// attempt): the one the stage recorded last, else — when that one is corrupt or missing — the ones before it, newest
    /// attempt first; false (a fresh start) when there is none or none is whole.</summary>
    public static async Task<bool> RestoreAsync(this StageContext stage, string target)
    {
        if (Directory.Exists(target)) return false;
        List<Artifact> checkpoints;
        await using (var db = await stage.Db.CreateDbContextAsync(stage.Cancellation))
            checkpoints = await db.Artifacts.AsNoTracking()
                .Where(a => a.StageId == stage.StageId && a.Kind == ArtifactKind.Checkpoint).ToListAsync(stage.Cancellation);
        // within an attempt, the worker's own clock orders its checkpoints; a later attempt resumed from an earlier one's
        var candidates = checkpoints.OrderByDescending(a => a.Id == stage.CheckpointArtifactId)
            .ThenByDescending(a => a.Attempt).ThenByDescending(a => a.CreatedAt);
        foreach (var artifact in candidates)
        {
            try
            {
                await stage.Store.VerifyAsync(artifact.Path, artifact.Sha256, stage.Cancellation);
            }
            catch (ArtifactCorruptException e)
            {
                stage.Logger.LogWarning("checkpoint {Path} is unusable ({Error}); trying the one before it", artifact.Path, e.Message);
                continue;
            }
            Copy(stage.Store.GetFullPath(artifact.Path), target);
            stage.Logger.LogInformation("restored checkpoint {Path} into the work folder", artifact.Path);
            return true;
        }
        if (checkpoints.Count > 0) stage.Logger.LogWarning("no usable checkpoint among {Count}; starting afresh", checkpoints.Count);
        return false;
    }

    static void Copy(string source, string target)
    {
        var partial = target + ".restore";
        if (Directory.Exists(partial)) Directory.Delete(partial, true);
        foreach (var file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
        {
            var to = Path.Combine(partial, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(file, to);
        }
        Directory.Move(partial, target);
    }
}
