using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Lora;
using HyperSd.Distillation.DistributionMatching;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.RewardScorer;
using HyperSd.Services.Runs;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.Stages;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.DistributionMatching;

/// <summary>The DMD stage's settings: the teacher, the stage whose 1-step LoRA it continues (and that LoRA's shape), the
/// trainer's config, and the rewards kept in this phase (null: none) with their files.</summary>
public sealed record DmdStageSettings(ModelRecipe Model, string Source, LoraConfig StudentLora, DmdConfig Config,
    IReadOnlyDictionary<string, double>? Rewards, RewardsRecipe? RewardFiles) : IModelStageSettings, ILoraContinuation;

/// <summary>
/// One-step enhancement by distribution matching (Hyper-SD §3.3) on the dmd-trainer role: one stage, dmd-k1, continuing the
/// 1-step LoRA of ReFL's k = 1 stage if the recipe has one, else TSCD's, with <see cref="DmdTrainer"/> on the prepared dataset's
/// prompts. Checkpoints and resumption work as in a TSCD stage; its LoRA is a "lora" artifact for 1 step, which the merger, the
/// evaluator and the generator read as they read TSCD's.
/// </summary>
public sealed class DmdStage : StageKind<DmdStageSettings>
{
    public const string Kind = "dmd", StageName = "dmd-k1";
    public override string Name => Kind;
    public override string Role => Roles.DmdTrainer;

    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs)
    {
        if (recipe.Dmd is not { Enabled: true } d) return [];
        var lora = RecipeMapping.StudentLora(recipe) ?? throw new RecipeValidationException(recipe.Name,
            [new("dmd", "DMD trains the 1-step student's LoRA (tscd.lora)")]);
        if (!recipe.Tscd.Segments.Contains(1))
            throw new RecipeValidationException(recipe.Name, [new("dmd", "DMD enhances the 1-step student, and no stage makes one: " +
                                                                         "tscd.segments needs 1")]);
        var source = recipe.Refl is { Enabled: true } r && r.Students.Contains(1) ? ReflStage.StageName(1) : TrainSegmentStage.StageName(1);
        return [new(StageName, new DmdStageSettings(recipe.Model, source, lora, RecipeMapping.Dmd(recipe), d.Rewards, recipe.Rewards))];
    }

    /// <summary>The prepared dataset (its prompts) and the 1-step LoRA of the source stage.</summary>
    protected override IEnumerable<Artifact> SelectInputs(DmdStageSettings settings, IReadOnlyList<StageOutput> earlier)
    {
        var lora = earlier.LastOrDefault(o => o.Stage.Name == settings.Source && o.Artifact.Kind == ArtifactKind.Lora)?.Artifact
            ?? throw new InvalidDataException($"a {Kind} stage enhances the 1-step LoRA of stage {settings.Source}, and the run has none");
        if (lora.Steps != 1)
            throw new InvalidDataException($"a {Kind} stage enhances a 1-step student; the LoRA of stage {settings.Source} " +
                                           $"({lora.Path}) is for {lora.Steps?.ToString() ?? "no recorded number of"} steps");
        return [Required(earlier, ArtifactKind.Dataset), lora,
            .. RewardScorer.TrainRewardsStage.InputFor(settings.Rewards?.Where(r => r.Value > 0).Select(r => r.Key) ?? [], earlier)];
    }

    protected override async Task ExecuteAsync(StageContext stage, DmdStageSettings settings)
    {
        var config = settings.Config;
        using var teacher = StageModels.LoadTeacher(settings.Model, stage.Options, stage.Device);
        using var prompts = StageModels.LoadDataset(stage.PathOf(stage.Input(ArtifactKind.Dataset)));
        using var rewards = settings.Rewards is { } weights
            ? RewardModels.Load(weights, settings.RewardFiles, stage) : null;
        var layout = new SegmentStageLayout(stage.WorkDir);
        await stage.RestoreAsync(layout.Checkpoint);
        using var student = StageModels.LoadStudent(teacher.Unet, settings.StudentLora, stage.PathOf(stage.Input(ArtifactKind.Lora)));
        var checkpoints = new CheckpointImporter(stage, layout.Checkpoint, config.CheckpointEvery);
        int? resumedFrom = null;
        var result = DmdTrainer.Train(config, teacher.Unet, teacher.Vae, teacher.Conditioner, StageModels.TrainingScheduler(teacher),
            prompts, rewards?.Reward, student, layout.Dir, p =>
            {
                if (resumedFrom is null && p.ResumedFrom > 0)
                    stage.Logger.LogInformation("resumed from the checkpoint of step {Step}", p.ResumedFrom);
                resumedFrom = p.ResumedFrom;
                stage.Report(p.Step / (double)p.TotalSteps, new { p.Step, p.TotalSteps, p.StepsPerSecond, p.ResumedFrom, p.Losses });
                checkpoints.AfterStep(p.Step);
            }, stage.Cancellation);
        var m = result.Metrics;
        stage.Report(1, new
        {
            m.Steps, TotalSteps = config.Steps, m.GeneratorUpdates, m.StepsPerSecond, ResumedFrom = resumedFrom,
            m.InitialDistributionMatching, m.FinalDistributionMatching, m.InitialRegression, m.FinalRegression, m.InitialFakeScore,
            m.FinalFakeScore, Source = settings.Source,
        });
        await stage.AddOutputAsync(ArtifactKind.Lora, layout.Final, "lora", segments: 1, steps: 1);
    }
}
