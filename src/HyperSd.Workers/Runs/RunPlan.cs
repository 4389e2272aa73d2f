using System.Text.Json;
using System.Text.Json.Nodes;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Recipes;
using Recipe = HyperSd.Recipes.Recipe;

namespace HyperSd.Workers.Runs;

/// <summary>A run's stages as the recipe lays them out, which stage feeds which, and the artifact kinds they exchange.</summary>
public static class RunPlan
{
    public const string Dataset = "dataset", Trajectories = "trajectories", Evaluate = "evaluate", Generate = "generate";

    /// <summary>Artifact kinds.</summary>
    public const string DatasetKind = "dataset", TrajectoriesKind = "trajectories", LoraKind = "lora", CheckpointKind = "checkpoint",
        GridKind = "grid", ReportKind = "report", ImagesKind = "images";

    const string TscdPrefix = "tscd-k";

    public static string TscdStage(int segments) => $"{TscdPrefix}{segments}";

    /// <summary>The stage that made an artifact, from its path (runs/&lt;run&gt;/&lt;stage&gt;/a&lt;n&gt;/…).</summary>
    public static string StageOfPath(string artifactPath) => artifactPath.Split('/')[2];

    /// <summary>k of a TSCD stage, from its name.</summary>
    public static int SegmentsOfStage(string stageName) =>
        stageName.StartsWith(TscdPrefix) && int.TryParse(stageName[TscdPrefix.Length..], out int k) ? k
            : throw new InvalidDataException($"'{stageName}' is not a TSCD stage name (tscd-k<segments>)");

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>dataset, trajectories, tscd-k… in the recipe's order, evaluate, and generate when the recipe asks for
    /// images; each with its recipe section as settings.</summary>
    public static List<Stage> Stages(Recipe recipe, Guid runId, int maxAttempts)
    {
        var stages = new List<(string Name, string Role, object Settings)>
        {
            (Dataset, Roles.DatasetPrep, recipe.Dataset),
            (Trajectories, Roles.TeacherTrajectories, recipe.Trajectories),
        };
        var tscd = recipe.ToTscdConfig();
        foreach (var k in recipe.Tscd.Segments)
            stages.Add((TscdStage(k), Roles.SegmentConsistency, tscd.StageFor(k)));
        stages.Add((Evaluate, Roles.Evaluator, recipe.Evaluation));
        if (recipe.Generation is { } generation) stages.Add((Generate, Roles.Generator, generation));
        return stages.Select((s, i) => new Stage
        {
            Id = Guid.NewGuid(), RunId = runId, Name = s.Name, Index = i, Role = s.Role, State = StageState.Pending,
            MaxAttempts = maxAttempts, SettingsJson = JsonSerializer.Serialize(s.Settings, s.Settings.GetType(), Json),
        }).ToList();
    }

    /// <summary>k of a TSCD stage, from its settings.</summary>
    public static int Segments(Stage stage) =>
        JsonNode.Parse(stage.SettingsJson)?["segments"]?.GetValue<int>()
        ?? throw new InvalidDataException($"stage {stage.Name}: settings_json has no 'segments'");

    /// <summary>The stages whose outputs <paramref name="stage"/> reads.</summary>
    public static IEnumerable<Stage> InputStages(IReadOnlyList<Stage> stages, Stage stage)
    {
        var ordered = stages.OrderBy(s => s.Index).ToList();
        Stage? Last(string role, int before) => ordered.LastOrDefault(s => s.Role == role && s.Index < before);
        var inputs = stage.Role switch
        {
            Roles.DatasetPrep => [],
            Roles.TeacherTrajectories => new[] { Last(Roles.DatasetPrep, stage.Index) },
            Roles.SegmentConsistency => [Last(Roles.TeacherTrajectories, stage.Index), Last(Roles.SegmentConsistency, stage.Index)],
            // every TSCD stage's LoRA: stage k's is also Hyper-SD's fixed k-step LoRA
            Roles.Evaluator or Roles.Generator => ordered.Where(s => s.Role == Roles.SegmentConsistency && s.Index < stage.Index).ToArray(),
            _ => throw new InvalidDataException($"stage {stage.Name}: unknown role '{stage.Role}'"),
        };
        return inputs.OfType<Stage>();
    }

    /// <summary>Where an attempt's outputs live in the artifact store; one folder per attempt, so a retry never meets
    /// a half-finished predecessor's files.</summary>
    public static string OutputPrefix(Guid runId, string stage, int attempt) => $"runs/{runId:N}/{stage}/a{attempt}/";

    /// <summary>The stage's scratch folder (relative to the artifact root), shared by its attempts: a re-dispatched
    /// training stage resumes from the checkpoint its predecessor left there.</summary>
    public static string WorkDir(Guid runId, string stage) => $"work/{runId:N}/{stage}";

    /// <summary>The command that runs <paramref name="stage"/>'s current attempt.</summary>
    public static IStageCommand Command(Stage stage, Guid[] inputs) => stage.Role switch
    {
        Roles.DatasetPrep => new PrepareDataset(stage.RunId, stage.Id, stage.Name, stage.Attempt, inputs),
        Roles.TeacherTrajectories => new GenerateTrajectories(stage.RunId, stage.Id, stage.Name, stage.Attempt, inputs),
        Roles.SegmentConsistency => new TrainSegmentStage(stage.RunId, stage.Id, stage.Name, stage.Attempt, inputs, Segments(stage)),
        Roles.Evaluator => new EvaluateModel(stage.RunId, stage.Id, stage.Name, stage.Attempt, inputs),
        Roles.Generator => new GenerateImages(stage.RunId, stage.Id, stage.Name, stage.Attempt, inputs),
        _ => throw new InvalidDataException($"stage {stage.Name}: unknown role '{stage.Role}'"),
    };
}
