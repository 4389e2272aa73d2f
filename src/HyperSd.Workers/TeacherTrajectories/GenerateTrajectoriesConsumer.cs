using HyperSd.Contracts;
using HyperSd.Distillation.Data;
using HyperSd.Workers.Execution;
using HyperSd.Workers.Runs;
using Trajectories = HyperSd.Distillation.Trajectories.TeacherTrajectories;

namespace HyperSd.Workers.TeacherTrajectories;

/// <summary>Runs the teacher's guided DDIM steps on the prepared dataset and stores the samples as the
/// "trajectories" artifact (one safetensors shard).</summary>
public sealed class GenerateTrajectoriesConsumer(StageRuntime runtime) : StageConsumer<GenerateTrajectories>(runtime)
{
    protected override async Task ExecuteAsync(StageContext stage, GenerateTrajectories command)
    {
        var options = stage.Recipe.ToTrajectoryOptions();
        using var data = LoadDataset(stage.PathOf(stage.Input(RunPlan.DatasetKind)));
        using var teacher = StageModels.LoadTeacher(stage.Recipe, stage.Options, stage.Device);
        stage.Report(0, new { Samples = options.Count, DatasetSize = data.Count });
        using var shard = Trajectories.Generate(teacher.Unet, teacher.Conditioner, StageModels.TrainingScheduler(teacher), data,
            options, stage.Cancellation, done => stage.Report(done / (double)options.Count, new { Samples = done, Total = options.Count, DatasetSize = data.Count }));
        var file = Path.Combine(stage.WorkDir, $"a{stage.Attempt}", "trajectories.safetensors");
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        shard.Save(file);
        stage.Report(1, new { Samples = shard.Count, DatasetSize = data.Count });
        await stage.AddOutputAsync(RunPlan.TrajectoriesKind, file, "trajectories.safetensors");
    }

    protected override IStageEvent Completed(GenerateTrajectories command, Guid[] outputs) =>
        new TrajectoriesGenerated(command.RunId, command.StageId, command.Attempt, outputs);

    /// <summary>All shards of a prepared dataset as one (latents and token ids are what the teacher needs).</summary>
    static LatentDataset LoadDataset(string dir)
    {
        var summary = DatasetSummary.Read(dir);
        if (summary.Shards.Count == 0) throw new InvalidDataException($"{dir}: the dataset has no shards");
        var shards = summary.Shards.Select(s => LatentDataset.Load(Path.Combine(dir, s))).ToList();
        if (shards.Count == 1) return shards[0];
        try { return LatentDataset.Concat(shards); }
        finally
        {
            foreach (var s in shards) s.Dispose();
        }
    }
}
