using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Runs;

/// <summary>Why a file or folder is removable.</summary>
public enum Garbage
{
    /// <summary>An attempt's scratch folder of a run that no longer runs (new attempts start from recorded artifacts).</summary>
    WorkFolder,
    /// <summary>Under a run's outputs but recorded by no artifact: an import cut short (<c>.partial-*</c>), a superseded
    /// attempt's files, an import whose database insert never happened.</summary>
    Unrecorded,
    /// <summary>A checkpoint of a succeeded run: its stage finished, nothing resumes from it.</summary>
    Checkpoint,
    /// <summary>The folder of a run the store does not know.</summary>
    UnknownRun,
}

/// <summary>One removable file or folder, relative to the artifact root; <see cref="Checkpoint"/> is its artifact row.</summary>
public sealed record GarbageItem(string Path, long SizeBytes, Garbage Reason, Guid? Checkpoint = null);

/// <summary>
/// Finds (and removes) what finished runs no longer need: never anything of a pending or running run, never a recorded
/// artifact other than a succeeded run's checkpoints. A run resumed while it collects is not protected: collect when no
/// resume is under way.
/// </summary>
public sealed class StoreCollector(IDbContextFactory<MetadataDbContext> dbs, IArtifactStore store)
{
    public async Task<IReadOnlyList<GarbageItem>> FindAsync(CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var runs = await db.Runs.AsNoTracking().ToDictionaryAsync(r => r.Id.ToString("N"), ct);
        var artifacts = await db.Artifacts.AsNoTracking().Where(a => a.RunId != null).ToListAsync(ct);
        var items = new List<GarbageItem>();
        foreach (var (folder, reason) in new[] { ("work", Garbage.WorkFolder), ("runs", Garbage.Unrecorded) })
        {
            var root = store.GetFullPath(folder);
            if (!Directory.Exists(root)) continue;
            foreach (var runDir in Directory.EnumerateDirectories(root).Order(StringComparer.Ordinal))
            {
                var relative = $"{folder}/{Path.GetFileName(runDir)}";
                if (!runs.TryGetValue(Path.GetFileName(runDir), out var run))
                    items.Add(Item(relative, Garbage.UnknownRun));
                else if (run.State is RunState.Pending or RunState.Running)
                    continue;
                else if (reason == Garbage.WorkFolder)
                    items.Add(Item(relative, Garbage.WorkFolder));
                else
                {
                    var recorded = artifacts.Where(a => a.RunId == run.Id).ToList();
                    Unrecorded(relative, recorded.Select(a => a.Path).ToHashSet(StringComparer.Ordinal), items);
                    if (run.State == RunState.Succeeded)
                        items.AddRange(recorded.Where(a => a.Kind == ArtifactKind.Checkpoint && store.Exists(a.Path))
                            .Select(a => Item(a.Path, Garbage.Checkpoint) with { Checkpoint = a.Id }));
                }
            }
        }
        return items;
    }

    /// <summary>Under <paramref name="dir"/>, what is neither a recorded artifact nor holds one.</summary>
    void Unrecorded(string dir, HashSet<string> recorded, List<GarbageItem> items)
    {
        foreach (var entry in Directory.EnumerateFileSystemEntries(store.GetFullPath(dir)).Order(StringComparer.Ordinal))
        {
            var relative = $"{dir}/{Path.GetFileName(entry)}";
            if (recorded.Contains(relative)) continue;
            if (recorded.Any(p => p.StartsWith(relative + "/", StringComparison.Ordinal)))
                Unrecorded(relative, recorded, items);
            else
                items.Add(Item(relative, Garbage.Unrecorded));
        }
    }

    GarbageItem Item(string relative, Garbage reason)
    {
        var full = store.GetFullPath(relative);
        long size = File.Exists(full) ? new FileInfo(full).Length
            : Directory.EnumerateFiles(full, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        return new GarbageItem(relative, size, reason);
    }

    /// <summary>Removes <paramref name="items"/> (from <see cref="FindAsync"/>): checkpoints' rows first, so that no
    /// row outlives its files.</summary>
    public async Task RemoveAsync(IReadOnlyList<GarbageItem> items, CancellationToken ct = default)
    {
        var checkpoints = items.Where(i => i.Checkpoint is not null).Select(i => i.Checkpoint!.Value).ToList();
        if (checkpoints.Count > 0)
        {
            await using var db = await dbs.CreateDbContextAsync(ct);
            await db.Stages.Where(s => s.CheckpointArtifactId != null && checkpoints.Contains(s.CheckpointArtifactId.Value))
                .ExecuteUpdateAsync(u => u.SetProperty(s => s.CheckpointArtifactId, (Guid?)null), ct);
            await db.ArtifactInputs.Where(i => checkpoints.Contains(i.ArtifactId)).ExecuteDeleteAsync(ct);
            await db.Artifacts.Where(a => checkpoints.Contains(a.Id)).ExecuteDeleteAsync(ct);
        }
        foreach (var item in items)
        {
            var full = store.GetFullPath(item.Path);
            if (Directory.Exists(full)) Directory.Delete(full, true);
            else if (File.Exists(full)) File.Delete(full);
            // an attempt's checkpoints/ folder goes with its last checkpoint
            if (item.Checkpoint is not null && Path.GetDirectoryName(full) is { } parent && Directory.Exists(parent)
                && !Directory.EnumerateFileSystemEntries(parent).Any())
                Directory.Delete(parent);
        }
    }
}
