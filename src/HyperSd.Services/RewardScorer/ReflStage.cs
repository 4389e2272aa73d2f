using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Lora;
using HyperSd.Distillation.FeedbackLearning;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Runs;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.Stages;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.RewardScorer;

/// <summary>One ReFL stage's settings: the teacher, the TSCD stage whose LoRA it continues (and that LoRA's shape), the
/// trainer's config, and the rewards with their weights and files.</summary>
public sealed record ReflStageSettings(ModelRecipe Model, string Source, LoraConfig StudentLora, ReflConfig Config,
    IReadOnlyDictionary<string, double> Rewards, RewardsRecipe? RewardFiles) : IModelStageSettings, ILoraContinuation;

/// <summary>
/// Reward feedback learning (Hyper-SD §3.2) on the reward-scorer role, which holds the reward models: one stage per k of the
/// recipe's <c>refl.students</c>, named refl-k{k}, continuing TSCD stage k's LoRA on the prepared dataset's prompts with
/// <see cref="ReflTrainer"/>. Checkpoints and resumption work as in a TSCD stage; its LoRA is a "lora" artifact for k steps,
/// which the merger, the evaluator and the generator read as they read TSCD's.
/// </summary>
public sealed class ReflStage : StageKind<ReflStageSettings>
{
    public const string Kind = "refl";
    public override string Name => Kind;
    public override string Role => Roles.RewardScorer;

    public static string StageName(int students) => $"refl-k{students}";

    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs)
    {
        if (recipe.Refl is not { Enabled: true } r) return [];
        bool toy = recipe.Model.Source == ModelSource.Toy;
        var lora = RecipeMapping.StudentLora(recipe) ?? throw new RecipeValidationException(recipe.Name,
            [new("refl", "feedback learning trains the TSCD students' LoRAs (tscd.lora)")]);
        return r.Students.Select(k => new PlannedStage(StageName(k), new ReflStageSettings(recipe.Model,
            TrainSegmentStage.StageName(k), lora, RecipeMapping.Refl(recipe, k), r.RewardWeights(toy), recipe.Rewards)));
    }

    /// <summary>The prepared dataset (its prompts) and the source TSCD stage's LoRA.</summary>
    protected override IEnumerable<Artifact> SelectInputs(ReflStageSettings settings, IReadOnlyList<StageOutput> earlier) =>
    [
        Required(earlier, ArtifactKind.Dataset),
        earlier.LastOrDefault(o => o.Stage.Name == settings.Source && o.Artifact.Kind == ArtifactKind.Lora)?.Artifact
            ?? throw new InvalidDataException($"a {Kind} stage continues the LoRA of stage {settings.Source}, and the run has none"),
        .. TrainRewardsStage.InputFor(settings.Rewards.Where(r => r.Value > 0).Select(r => r.Key), earlier),
    ];

    protected override async Task ExecuteAsync(StageContext stage, ReflStageSettings settings)
    {
        var config = settings.Config;
        using var teacher = StageModels.LoadTeacher(settings.Model, stage.Options, stage.Device);
        using var prompts = StageModels.LoadDataset(stage.PathOf(stage.Input(ArtifactKind.Dataset)));
        using var rewards = RewardModels.Load(settings.Rewards, settings.RewardFiles, stage);
        var layout = new SegmentStageLayout(stage.WorkDir);
        await stage.RestoreAsync(layout.Checkpoint);
        using var student = StageModels.LoadStudent(teacher.Unet, settings.StudentLora, stage.PathOf(stage.Input(ArtifactKind.Lora)));
        var checkpoints = new CheckpointImporter(stage, layout.Checkpoint, config.CheckpointEvery);
        int? resumedFrom = null;
        var result = ReflTrainer.Train(config, teacher.Unet, teacher.Vae, teacher.Conditioner, StageModels.TrainingScheduler(teacher),
            prompts, rewards.Reward, student, layout.Dir, p =>
            {
                if (resumedFrom is null && p.ResumedFrom > 0)
                    stage.Logger.LogInformation("resumed from the checkpoint of step {Step}", p.ResumedFrom);
                resumedFrom = p.ResumedFrom;
                stage.Report(p.Step / (double)p.TotalSteps, new
                {
                    p.Step, p.TotalSteps, p.StudentSteps, p.StepsPerSecond, p.ResumedFrom,
                    Losses = new { p.Losses.Reward, p.Losses.Anchor, p.Losses.MeanReward }, p.Losses.Rewards,
                });
                checkpoints.AfterStep(p.Step);
            }, stage.Cancellation);
        var m = result.Metrics;
        stage.Report(1, new
        {
            m.Steps, TotalSteps = config.Steps, m.StudentSteps, m.StepsPerSecond, ResumedFrom = resumedFrom, m.InitialReward,
            m.FinalReward, m.InitialAnchor, m.FinalAnchor, Source = settings.Source,
        });
        await stage.AddOutputAsync(ArtifactKind.Lora, layout.Final, "lora", segments: config.StudentSteps, steps: config.StudentSteps);
    }
}
