using System.Text.Json;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Lora;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Runs;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.LoraMerger;

/// <summary>The merge's settings, resolved at submission: the weight of each source stage's LoRA by stage name (in run
/// order), the target ranks (<see cref="LoraMergeOptions"/>), the files to write, and whether to fuse.</summary>
public sealed record MergeSettings(ModelRecipe Model, string RecipeName, IReadOnlyDictionary<string, double> Weights, int Rank,
    int? ConvRank, bool ClampRank, IReadOnlyList<LoraFileFormat> Formats, bool Fuse) : IModelStageSettings
{
    public LoraMergeOptions MergeOptions() => new() { Rank = Rank, ConvRank = ConvRank, ClampRankToModule = ClampRank };
}

/// <summary>
/// Hyper-SD's unified LoRA, when the recipe has a <c>merge</c> section: the weighted sum of the stages' LoRA deltas,
/// re-factorised by truncated SVD (<see cref="LoraMerge"/>), stored as one "lora" artifact (no step count: it samples
/// any) holding the formats asked for, with a JSON report of the discarded energy per module and overall, and, with
/// <c>fuse</c>, the base UNet with the LoRA fused in (diffusers layout). Runs after the stages that make LoRAs and
/// before the evaluation, which measures the unified LoRA beside the fixed-step ones. The LoRAs must adapt the same modules (the
/// run's stages all train tscd.lora's targets): one that differs is a mixed-up input, refused naming the modules, not merged
/// over the union (which <see cref="LoraMerge.Fuse"/> allows, each absent delta being zero).
/// </summary>
public sealed class MergeLorasStage : StageKind<MergeSettings>
{
    public const string Kind = "merge-loras";
    public const string StageName = "unified";
    public override string Name => Kind;
    public override string Role => Roles.LoraMerger;

    /// <summary>The file names of each format: kohya's for A1111, ComfyUI and <c>hypersd generate --lora</c> (the name
    /// a TSCD stage's LoRA has), and the one diffusers' <c>load_lora_weights</c> reads from a folder.</summary>
    public const string KohyaFile = "lora.safetensors", PeftFile = "pytorch_lora_weights.safetensors", ReportFile = "merge-report.json";

    /// <summary>The stage kinds whose LoRAs are merged.</summary>
    static readonly IStageKind[] Sources = [new TrainSegmentStage(), new RewardScorer.ReflStage(), new DistributionMatching.DmdStage()];

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    /// <summary>The LoRA file of a "lora" artifact's folder (a TSCD stage's, or this stage's in whichever format it has).</summary>
    public static string LoraFile(string dir) =>
        File.Exists(Path.Combine(dir, KohyaFile)) || !File.Exists(Path.Combine(dir, PeftFile))
            ? Path.Combine(dir, KohyaFile) : Path.Combine(dir, PeftFile);

    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs)
    {
        if (recipe.Merge is not { Enabled: true }) return [];
        var planned = Sources.SelectMany(k => k.Plan(recipe, inputs)).ToList();
        // a stage that continues another's LoRA (ReFL on TSCD stage k, DMD on the 1-step one) replaces it in the default weights
        var superseded = planned.Select(p => p.Settings).OfType<ILoraContinuation>().Select(r => r.Source).ToHashSet();
        return [new(StageName, RecipeMapping.Merge(recipe, planned.Select(p => p.Name).ToList(), superseded))];
    }

    /// <summary>The LoRA of each source stage with a non-zero weight, in run order.</summary>
    protected override IEnumerable<Artifact> SelectInputs(MergeSettings settings, IReadOnlyList<StageOutput> earlier)
    {
        var kinds = Sources.Select(k => k.Name).ToHashSet();
        var loras = earlier.Where(o => o.Artifact.Kind == ArtifactKind.Lora && kinds.Contains(o.Artifact.StageKind ?? "")).ToList();
        var weighted = settings.Weights.Where(w => w.Value != 0).Select(w => w.Key).ToList();
        var absent = weighted.Where(name => loras.All(o => o.Stage.Name != name)).ToList();
        if (absent.Count > 0)
            throw new InvalidDataException($"a {Kind} stage weights the LoRAs of {string.Join(", ", absent)}, and the run has " +
                                           $"no LoRA from {(absent.Count == 1 ? "that stage" : "those stages")}");
        return loras.Where(o => weighted.Contains(o.Stage.Name)).Select(o => o.Artifact);
    }

    protected override async Task ExecuteAsync(StageContext stage, MergeSettings settings)
    {
        var inputs = stage.InputsOf(ArtifactKind.Lora);
        var stageIds = inputs.Select(a => a.StageId).ToList();
        Dictionary<Guid, string> names;
        await using (var db = await stage.Db.CreateDbContextAsync(stage.Cancellation))
            names = await db.Stages.AsNoTracking().Where(s => stageIds.Contains(s.Id))
                .ToDictionaryAsync(s => s.Id, s => s.Name, stage.Cancellation);
        var sources = inputs.Select(a => names[a.StageId!.Value]).ToList();
        var weights = sources.Select(s => settings.Weights[s]).ToList();
        var files = inputs.Select(a => LoraFile(stage.PathOf(a))).ToList();

        var started = System.Diagnostics.Stopwatch.StartNew();
        using var teacher = StageModels.LoadTeacher(settings.Model, stage.Options, stage.Device);
        using var merged = LoraMerge.Merge(teacher.Unet, files, weights, settings.MergeOptions());
        var report = merged.Report;
        stage.Logger.LogInformation("merged {Sources} with weights {Weights}: {Report}", string.Join(", ", sources),
            string.Join(", ", weights), report);
        stage.Report(0.5, new { Sources = sources, Weights = weights, report.DiscardedFraction });

        var dir = Path.Combine(stage.WorkDir, "lora");
        Directory.CreateDirectory(dir);
        foreach (var format in settings.Formats)
            merged.Save(Path.Combine(dir, format == LoraFileFormat.Kohya ? KohyaFile : PeftFile), format);
        var reportPath = Path.Combine(stage.WorkDir, ReportFile);
        await File.WriteAllTextAsync(reportPath, JsonSerializer.Serialize(new
        {
            Sources = sources.Select((s, i) => new { Stage = s, Artifact = inputs[i].Id, Weight = weights[i] }),
            settings.Rank, settings.ConvRank, report.Energy, report.DiscardedEnergy, report.DiscardedFraction,
            // √(discarded energy) is the Frobenius norm of the merged delta's error (Eckart–Young)
            FrobeniusError = Math.Sqrt(report.DiscardedEnergy),
            Modules = report.Modules.Select(m => new
            {
                m.Module, m.WeightShape, m.Rank, m.MaxRank, m.Energy, m.DiscardedEnergy, m.DiscardedFraction,
            }),
        }, Json), stage.Cancellation);
        double mergeSeconds = started.Elapsed.TotalSeconds;

        if (settings.Fuse)
        {
            // the stage's own copy of the base: fusing changes it in place
            var unet = Path.Combine(stage.WorkDir, "unet");
            LoraMerge.FuseAndSave(teacher.Unet, merged.Adapter, unet);
            await stage.AddOutputAsync(ArtifactKind.Unet, unet, "unet");
        }
        await stage.AddOutputAsync(ArtifactKind.Lora, dir, "lora");
        await stage.AddOutputAsync(ArtifactKind.Report, reportPath, ReportFile);
        stage.Report(1, new
        {
            Sources = sources, Weights = weights, report.Energy, report.DiscardedFraction, Modules = report.Modules.Count,
            MergeSeconds = mergeSeconds, Seconds = started.Elapsed.TotalSeconds,
        });
    }
}
