using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Distillation.Data;
using HyperSd.Distillation.Trajectories;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;

namespace HyperSd.Services.TeacherTrajectories;

/// <summary>The trajectories stage's settings: the teacher and its guided ODE steps.</summary>
public sealed record TrajectorySettings(ModelRecipe Model, TrajectoryOptions Options) : IModelStageSettings;

/// <summary>Runs the teacher's guided DDIM steps on the prepared dataset and stores the samples as the
/// "trajectories" artifact (one safetensors shard).</summary>
public sealed class GenerateTrajectoriesStage : StageKind<TrajectorySettings>
{
    public const string StageName = "trajectories";
    public override string Name => "generate-trajectories";
    public override string Role => Roles.TeacherTrajectories;

    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs) =>
        [new(StageName, new TrajectorySettings(recipe.Model, RecipeMapping.Trajectories(recipe)))];

    protected override IEnumerable<Artifact> SelectInputs(TrajectorySettings settings, IReadOnlyList<StageOutput> earlier) =>
        [Required(earlier, ArtifactKind.Dataset)];

    protected override async Task ExecuteAsync(StageContext stage, TrajectorySettings settings)
    {
        var options = settings.Options;
        using var data = StageModels.LoadDataset(stage.PathOf(stage.Input(ArtifactKind.Dataset)));
        using var teacher = StageModels.LoadTeacher(settings.Model, stage.Options, stage.Device);
        stage.Report(0, new { Samples = options.Count, DatasetSize = data.Count });
        using var shard = TrajectorySampling.Generate(teacher.Unet, teacher.Conditioner, StageModels.TrainingScheduler(teacher), data,
            options, stage.Cancellation,
            done => stage.Report(done / (double)options.Count, new { Samples = done, Total = options.Count, DatasetSize = data.Count }));
        var file = Path.Combine(stage.WorkDir, "trajectories.safetensors");
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        shard.Save(file);
        stage.Report(1, new { Samples = shard.Count, DatasetSize = data.Count });
        await stage.AddOutputAsync(ArtifactKind.Trajectories, file, "trajectories.safetensors");
    }
}
