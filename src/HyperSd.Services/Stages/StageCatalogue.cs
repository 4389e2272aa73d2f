using System.Text.Json;
using System.Text.Json.Serialization;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Recipes;
using HyperSd.Services.DatasetPrep;
using HyperSd.Services.Evaluator;
using HyperSd.Services.Generator;
using HyperSd.Services.LoraMerger;
using HyperSd.Services.Runs;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.TeacherTrajectories;

namespace HyperSd.Services.Stages;

/// <summary>
/// Every stage kind the services know, in run order: a recipe's stages are each kind's planned stages, kind after
/// kind. The submitter, the orchestrator and every worker use the same catalogue; adding a stage kind is its folder
/// plus one <see cref="Add"/>.
/// </summary>
public sealed class StageCatalogue
{
    readonly List<IStageKind> kinds = [];

    /// <summary>The built-in stages: dataset, trajectories, TSCD k = 8 → 1, the learnt rewards, ReFL, DMD, the unified LoRA,
    /// evaluation and its reward scores, generation;
    /// then a generation job's chunks and its scoring (best-of-n).</summary>
    public static StageCatalogue Default() => new StageCatalogue()
        .Add(new PrepareDatasetStage())
        .Add(new GenerateTrajectoriesStage())
        .Add(new TrainSegmentStage())
        .Add(new RewardScorer.TrainRewardsStage())
        .Add(new RewardScorer.ReflStage())
        .Add(new DistributionMatching.DmdStage())
        .Add(new MergeLorasStage())
        .Add(new EvaluateModelStage())
        .Add(new RewardScorer.ScoreEvaluationStage())
        .Add(new GenerateImagesStage())
        .Add(new Jobs.GenerateChunkStage())
        .Add(new RewardScorer.ScoreImagesStage());

    /// <summary>Appends a kind: its stages run after those of every kind added before it.</summary>
    public StageCatalogue Add(IStageKind kind)
    {
        if (kinds.Any(k => k.Name == kind.Name)) throw new ArgumentException($"stage catalogue: kind '{kind.Name}' is registered twice");
        kinds.Add(kind);
        return this;
    }

    public IReadOnlyList<IStageKind> Kinds => kinds;

    /// <summary>The orchestrator and every kind's role.</summary>
    public IReadOnlyList<string> Roles => [Contracts.Roles.Orchestrator, .. kinds.Select(k => k.Role).Distinct()];

    public IStageKind Get(string name) => kinds.FirstOrDefault(k => k.Name == name)
        ?? throw new InvalidDataException(
            $"unknown stage kind '{name}' (this worker knows: {string.Join(", ", kinds.Select(k => k.Name))})");

    /// <summary>The run's stages with their settings (JSON of each kind's settings type), pending.</summary>
    public List<Stage> Plan(RecipeInputs inputs, Guid runId, int maxAttempts)
    {
        var planned = kinds.SelectMany(kind => kind.Plan(inputs.Recipe, inputs).Select(p => (Kind: kind, Stage: p))).ToList();
        var duplicate = planned.GroupBy(p => p.Stage.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new InvalidDataException($"the recipe plans two stages named '{duplicate.Key}'");
        return Stages(runId, maxAttempts, planned);
    }

    /// <summary>Pending stages of the given kinds and settings, in this order.</summary>
    public static List<Stage> Stages(Guid runId, int maxAttempts, IEnumerable<(IStageKind Kind, PlannedStage Stage)> planned) =>
        planned.Select((p, i) => new Stage
        {
            Id = Guid.NewGuid(), RunId = runId, Name = p.Stage.Name, Kind = p.Kind.Name, Index = i, Role = p.Kind.Role,
            State = StageState.Pending, MaxAttempts = maxAttempts, SettingsJson = WriteSettings(p.Kind, p.Stage.Settings),
        }).ToList();

    /// <summary>A stage's stored settings as its kind's type.</summary>
    public object ReadSettings(Stage stage)
    {
        var kind = Get(stage.Kind);
        try
        {
            return JsonSerializer.Deserialize(stage.SettingsJson, kind.SettingsType, Json)
                ?? throw new InvalidDataException("the settings are null");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"stage {stage.Name} ({stage.Kind}): its stored settings do not read as " +
                                           $"{kind.SettingsType.Name}: {e.Message}", e);
        }
    }

    static string WriteSettings(IStageKind kind, object settings) =>
        settings.GetType() == kind.SettingsType ? JsonSerializer.Serialize(settings, kind.SettingsType, Json)
            : throw new ArgumentException($"stage kind {kind.Name} planned settings of type {settings.GetType().Name}; " +
                                          $"expected {kind.SettingsType.Name}");

    /// <summary>snake_case keys and enum names, as the recipes write them.</summary>
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };
}
