using HyperSd.Data.Entities;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Runs;

namespace HyperSd.Services.Stages;

/// <summary>A stage the recipe asks for: its name within the run and its kind's typed settings, resolved once.</summary>
public sealed record PlannedStage(string Name, object Settings);

/// <summary>An output of an earlier stage of the run (its current, succeeded attempt), with the stage that made it.</summary>
public sealed record StageOutput(Stage Stage, Artifact Artifact);

/// <summary>
/// One kind of stage, defined in one place: the role (and queue) that runs it, its typed settings, which stages a recipe
/// gets of it, how it chooses its inputs among the run's earlier outputs (by typed artifact metadata), and its work.
/// Every kind travels in the same command (<see cref="Contracts.RunStage"/>) and event (<see cref="Contracts.StageCompleted"/>).
/// </summary>
public interface IStageKind
{
    /// <summary>Unique in the catalogue; stored with each stage and carried by its command.</summary>
    string Name { get; }
    string Role { get; }
    Type SettingsType { get; }
    /// <summary>Its stages need nothing from each other: a run of them has them all dispatched at once (a generation
    /// job's chunks), where other stages run one after another.</summary>
    bool Concurrent { get; }
    /// <summary>The stages of this kind that <paramref name="recipe"/> asks for, in run order (none if it asks for none).
    /// Runs at submission: everything a stage needs from the recipe is resolved here; <paramref name="recipe"/> is
    /// <paramref name="inputs"/>' (its paths checked and resolved), which also hold the stored copies of the files it names.</summary>
    IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs);
    IEnumerable<Artifact> SelectInputs(object settings, IReadOnlyList<StageOutput> earlier);
    Task ExecuteAsync(StageContext context, object settings);
}

/// <summary>A stage kind with settings of type <typeparamref name="TSettings"/>.</summary>
public abstract class StageKind<TSettings> : IStageKind where TSettings : class
{
    public abstract string Name { get; }
    public abstract string Role { get; }
    public Type SettingsType => typeof(TSettings);
    public virtual bool Concurrent => false;

    public abstract IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs);

    /// <summary>By default a stage reads nothing.</summary>
    protected virtual IEnumerable<Artifact> SelectInputs(TSettings settings, IReadOnlyList<StageOutput> earlier) => [];

    protected abstract Task ExecuteAsync(StageContext context, TSettings settings);

    IEnumerable<Artifact> IStageKind.SelectInputs(object settings, IReadOnlyList<StageOutput> earlier) =>
        SelectInputs((TSettings)settings, earlier);

    Task IStageKind.ExecuteAsync(StageContext context, object settings) => ExecuteAsync(context, (TSettings)settings);

    /// <summary>The latest earlier output of <paramref name="kind"/>, optionally from stages of one kind; null if none.</summary>
    protected static Artifact? Latest(IReadOnlyList<StageOutput> earlier, ArtifactKind kind, string? stageKind = null) =>
        earlier.LastOrDefault(o => o.Artifact.Kind == kind && (stageKind is null || o.Artifact.StageKind == stageKind))?.Artifact;

    /// <summary>Like <see cref="Latest"/>, but the input is required.</summary>
    protected Artifact Required(IReadOnlyList<StageOutput> earlier, ArtifactKind kind, string? stageKind = null) =>
        Latest(earlier, kind, stageKind) ?? throw new InvalidDataException(
            $"a {Name} stage needs a '{kind.ToString().ToLowerInvariant()}' artifact" +
            $"{(stageKind is null ? "" : $" from a {stageKind} stage")} " +
            $"from an earlier stage, and the run has none");
}

/// <summary>Settings of a stage that trains on from another stage's LoRA (ReFL on a TSCD student): by default its LoRA
/// replaces that one in the unified LoRA.</summary>
public interface ILoraContinuation
{
    /// <summary>The name of the stage whose LoRA it continues.</summary>
    string Source { get; }
}

/// <summary>Settings of a stage that loads the recipe's model: the worker checks its device against the model's.</summary>
public interface IModelStageSettings
{
    ModelRecipe Model { get; }
}
