using HyperSd.Contracts;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Trajectories;
using HyperSd.Workers.Execution;
using HyperSd.Workers.Runs;
using Microsoft.Extensions.Logging;

namespace HyperSd.Workers.SegmentConsistency;

/// <summary>
/// One TSCD stage (k segments), from the previous stage's student when there is one. It trains in the stage's work
/// folder, which its attempts share: a re-dispatched attempt resumes from the last checkpoint there (or from the
/// stage's recorded checkpoint artifact). Each checkpoint is also stored as an artifact, and the finished stage's
/// LoRA folder becomes the "lora" artifact.
/// </summary>
public sealed class TrainSegmentStageConsumer(StageRuntime runtime) : StageConsumer<TrainSegmentStage>(runtime)
{
    const string CheckpointFolder = "checkpoint";

    protected override async Task ExecuteAsync(StageContext stage, TrainSegmentStage command)
    {
        var config = stage.Recipe.ToTscdConfig().StageFor(command.Segments);
        using var teacher = StageModels.LoadTeacher(stage.Recipe, stage.Options, stage.Device);
        using var shard = TrajectoryShard.Load(stage.PathOf(stage.Input(RunPlan.TrajectoriesKind)));
        var previous = stage.OptionalInput(RunPlan.LoraKind);
        using var start = previous is null ? null : StageModels.LoadStudent(teacher.Unet, config, stage.PathOf(previous));
        var dir = stage.WorkDir;
        await stage.RestoreAsync(Path.Combine(dir, CheckpointFolder));

        int imported = -1;
        int? resumedFrom = null; // null: no step ran here (the stage had already finished)
        var result = SegmentConsistencyTrainer.Train(config, teacher.Unet, teacher.Conditioner, StageModels.TrainingScheduler(teacher), [shard],
            dir, p =>
            {
                if (resumedFrom is null && p.ResumedFrom > 0)
                    stage.Logger.LogInformation("resumed from the checkpoint of step {Step}", p.ResumedFrom);
                resumedFrom = p.ResumedFrom;
                stage.Report(p.Step / (double)p.TotalSteps, new
                {
                    p.Step, p.TotalSteps, p.Segments, p.StepsPerSecond, p.ResumedFrom,
                    Losses = new { p.Losses.Consistency, p.Losses.Generator, p.Losses.Discriminator },
                });
                // The trainer saves step s−1's checkpoint before step s and waits in this callback: the folder is whole.
                int saved = p.Step - 1;
                var checkpoint = Path.Combine(dir, CheckpointFolder);
                if (saved > 0 && saved % config.CheckpointEvery == 0 && saved != imported && Directory.Exists(checkpoint))
                {
                    stage.AddCheckpointAsync(checkpoint, $"step-{saved:D7}").GetAwaiter().GetResult();
                    imported = saved;
                }
            }, stage.Cancellation, start);
        try
        {
            var m = result.Metrics;
            stage.Report(1, new { m.Steps, TotalSteps = config.Steps, m.Segments, m.StepsPerSecond, ResumedFrom = resumedFrom, m.InitialLoss,
                m.FinalLoss, m.FinalGeneratorLoss, m.FinalDiscriminatorLoss });
            await stage.AddOutputAsync(RunPlan.LoraKind, Path.Combine(dir, "final"), "lora");
        }
        finally
        {
            if (!ReferenceEquals(result.Student, start)) result.Student.Dispose();
        }
    }

    protected override IStageEvent Completed(TrainSegmentStage command, Guid[] outputs) =>
        new SegmentStageCompleted(command.RunId, command.StageId, command.Attempt, outputs);
}
