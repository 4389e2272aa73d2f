using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Trajectories;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.SegmentConsistency;

/// <summary>One TSCD stage's settings: the teacher and the trainer's config (its k is <c>Config.Segments</c>).</summary>
public sealed record SegmentStageSettings(ModelRecipe Model, SegmentStageConfig Config) : IModelStageSettings;

/// <summary>
/// One TSCD stage (k segments) per entry of the recipe's <c>tscd.segments</c>, each from the previous stage's student.
/// It trains in its attempt's work folder (<see cref="SegmentStageLayout"/>): a re-dispatched attempt resumes from the
/// stage's last recorded checkpoint artifact, which it copies there. Each checkpoint is stored as an artifact, and the
/// finished stage's folder becomes the "lora" artifact, tagged with k and with the step count it is for (Hyper-SD:
/// stage k's LoRA samples k steps).
/// </summary>
public sealed class TrainSegmentStage : StageKind<SegmentStageSettings>
{
    public const string Kind = "train-segment-stage";
    public override string Name => Kind;
    public override string Role => Roles.SegmentConsistency;

    /// <summary>The name of TSCD stage k in a run.</summary>
    public static string StageName(int segments) => $"tscd-k{segments}";

    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs) => recipe.Tscd.Segments
        .Select(k => new PlannedStage(StageName(k), new SegmentStageSettings(recipe.Model, RecipeMapping.SegmentStage(recipe, k))));

    /// <summary>The trajectories, and the previous TSCD stage's LoRA when there is one.</summary>
    protected override IEnumerable<Artifact> SelectInputs(SegmentStageSettings settings, IReadOnlyList<StageOutput> earlier) =>
        new[] { Required(earlier, ArtifactKind.Trajectories), Latest(earlier, ArtifactKind.Lora, Kind) }.OfType<Artifact>();

    protected override async Task ExecuteAsync(StageContext stage, SegmentStageSettings settings)
    {
        var config = settings.Config;
        using var teacher = StageModels.LoadTeacher(settings.Model, stage.Options, stage.Device);
        using var shard = TrajectoryShard.Load(stage.PathOf(stage.Input(ArtifactKind.Trajectories)));
        var previous = stage.OptionalInput(ArtifactKind.Lora);
        using var start = previous is null ? null : StageModels.LoadStudent(teacher.Unet, config.Lora, stage.PathOf(previous));
        var layout = new SegmentStageLayout(stage.WorkDir);
        await stage.RestoreAsync(layout.Checkpoint);

        var checkpoints = new CheckpointImporter(stage, layout.Checkpoint, config.CheckpointEvery);
        int? resumedFrom = null; // null: no step ran here (the stage had already finished)
        var result = SegmentConsistencyTrainer.Train(
            config, teacher.Unet, teacher.Conditioner, StageModels.TrainingScheduler(teacher), [shard],
            layout.Dir, p =>
            {
                if (resumedFrom is null && p.ResumedFrom > 0)
                    stage.Logger.LogInformation("resumed from the checkpoint of step {Step}", p.ResumedFrom);
                resumedFrom = p.ResumedFrom;
                stage.Report(p.Step / (double)p.TotalSteps, new
                {
                    p.Step, p.TotalSteps, p.Segments, p.StepsPerSecond, p.ResumedFrom,
                    Losses = new { p.Losses.Consistency, p.Losses.Generator, p.Losses.Discriminator },
                });
                checkpoints.AfterStep(p.Step);
            }, stage.Cancellation, start);
        try
        {
            var m = result.Metrics;
            stage.Report(1, new
            {
                m.Steps, TotalSteps = config.Steps, m.Segments, m.StepsPerSecond, ResumedFrom = resumedFrom, m.InitialLoss,
                m.FinalLoss, m.FinalGeneratorLoss, m.FinalDiscriminatorLoss, m.SecondsPerStep,
            });
            await stage.AddOutputAsync(ArtifactKind.Lora, layout.Final, "lora", segments: config.Segments, steps: config.Segments);
        }
        finally
        {
            if (!ReferenceEquals(result.Student, start)) result.Student.Dispose();
        }
    }
}
