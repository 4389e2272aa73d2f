using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Services.DistributionMatching;
using HyperSd.Services.LoraMerger;
using HyperSd.Services.RewardScorer;
using HyperSd.Services.Runs;
using HyperSd.Services.SegmentConsistency;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Jobs;

/// <summary>
/// A job's LoRAs given as a run's artifact (<see cref="JobLora.Run"/>: the run's id, or its name for the newest run of
/// that name), resolved at submission to the LoRA file in the artifact store: the fixed-step LoRA made for
/// <see cref="JobLora.Steps"/> steps, or without steps the run's unified LoRA if it made one, else its last one. Images
/// record it as "run/stage" with its sha256.
/// </summary>
public static class RunLoras
{
    public static async Task<GenerationJobSpec> ResolveAsync(GenerationJobSpec spec, MetadataDbContext db, IArtifactStore artifacts,
        CancellationToken ct = default)
    {
        var loras = new List<JobLora>();
        for (int i = 0; i < spec.Loras.Count; i++)
            loras.Add(await ResolveAsync(spec.Loras[i], $"loras[{i}]", db, artifacts, ct));
        return spec with { Loras = loras };
    }

    /// <summary>One LoRA: a path as is, a run's resolved to its file; <paramref name="field"/> names it in errors.</summary>
    public static async Task<JobLora> ResolveAsync(JobLora lora, string field, MetadataDbContext db, IArtifactStore artifacts,
        CancellationToken ct = default)
    {
        if ((lora.Path is null) == (lora.Run is null))
            throw new InvalidFieldException(field, "give exactly one of path (a .safetensors file) and run (a run's id or name)");
        return lora.Run is { } run ? await ResolveAsync(lora, run, field, db, artifacts, ct) : lora;
    }

    static async Task<JobLora> ResolveAsync(JobLora lora, string reference, string field, MetadataDbContext db, IArtifactStore artifacts,
        CancellationToken ct)
    {
        var runs = db.Runs.AsNoTracking();
        var run = Guid.TryParse(reference, out var id)
            ? await runs.SingleOrDefaultAsync(r => r.Id == id, ct)
            : await runs.Where(r => r.Name == reference).OrderByDescending(r => r.CreatedAt).FirstOrDefaultAsync(ct);
        if (run is null) throw new InvalidFieldException($"{field}.run", $"no run '{reference}' in the store");
        var made = await db.Artifacts.AsNoTracking()
            .Where(a => a.RunId == run.Id && a.Kind == ArtifactKind.Lora
                        && (TrainedKinds.Contains(a.StageKind!) || a.StageKind == MergeLorasStage.Kind))
            .OrderBy(a => a.CreatedAt).ToListAsync(ct);
        var unified = made.LastOrDefault(a => a.StageKind == MergeLorasStage.Kind);
        made.RemoveAll(a => a == unified);
        if (made.Count == 0)
            throw new InvalidFieldException($"{field}.run",
                $"run '{run.Name}' ({run.State.ToString().ToLowerInvariant()}) has made no LoRA yet");
        var artifact = lora.Steps is { } steps ? made.LastOrDefault(a => a.Steps == steps) : unified ?? made[^1];
        if (artifact is null)
            throw new InvalidFieldException($"{field}.steps", $"run '{run.Name}' has no LoRA for {lora.Steps} steps; it has LoRAs for " +
                                                              $"{string.Join(", ", made.Select(a => a.Steps).Distinct())} steps");
        var path = MergeLorasStage.LoraFile(artifacts.GetFullPath(artifact.Path));
        if (!File.Exists(path))
            throw new InvalidFieldException($"{field}.run", $"run '{run.Name}' fine-tuned the whole UNet (no tscd.lora), not a LoRA: " +
                                                            $"{artifact.Path} has no {SegmentStageLayout.LoraFile}");
        return lora with { Path = path, Id = $"{run.Name}/{StageNameOf(artifact)}", Steps = artifact.Steps };
    }

    /// <summary>The kinds of the stages that train a k-step student's LoRA, in the order a run makes them: TSCD, ReFL
    /// (continuing TSCD's), DMD (continuing the 1-step one).</summary>
    public static readonly string[] TrainedKinds = [TrainSegmentStage.Kind, ReflStage.Kind, DmdStage.Kind];

    /// <summary>Whether an artifact is a LoRA a training stage made (not the unified one).</summary>
    public static bool IsTrained(Artifact a) => a.Kind == ArtifactKind.Lora && TrainedKinds.Contains(a.StageKind);

    /// <summary>The name of the stage that made a run's "lora" artifact (what evaluation rows and image records call the
    /// model): unified, dmd-k1, refl-k{k} or tscd-k{k}.</summary>
    public static string StageNameOf(Artifact lora)
    {
        if (lora.StageKind == MergeLorasStage.Kind) return MergeLorasStage.StageName;
        int k = lora.Segments ?? throw new InvalidDataException($"LoRA artifact {lora.Id} ({lora.Path}) has no segments (k) recorded");
        return lora.StageKind switch
        {
            ReflStage.Kind => ReflStage.StageName(k),
            DmdStage.Kind => DmdStage.StageName,
            _ => TrainSegmentStage.StageName(k),
        };
    }
}
