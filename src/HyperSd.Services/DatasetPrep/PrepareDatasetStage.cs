using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Distillation.Data;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.DatasetPrep;

/// <summary>The dataset stage's settings: the teacher (its VAE and tokenizers), the image–caption source and the image size.</summary>
public sealed record PrepareDatasetSettings(ModelRecipe Model, DatasetRecipe Dataset, int Resolution) : IModelStageSettings;

/// <summary>Reads the recipe's image–caption pairs, encodes latents and tokens into shards, stores them as the
/// "dataset" artifact and records the dataset.</summary>
public sealed class PrepareDatasetStage : StageKind<PrepareDatasetSettings>
{
    public const string StageName = "dataset";
    public override string Name => "prepare-dataset";
    public override string Role => Roles.DatasetPrep;

    public override IEnumerable<PlannedStage> Plan(Recipe recipe) =>
        [new(StageName, new PrepareDatasetSettings(recipe.Model, recipe.Dataset, RecipeMapping.ImageResolution(recipe)))];

    protected override async Task ExecuteAsync(StageContext stage, PrepareDatasetSettings settings)
    {
        var d = settings.Dataset;
        IImageCaptionSource source = d.Source switch
        {
            DatasetSource.Toy => new ToySource(d.Count ?? throw new ArgumentException("dataset.count is required for the toy source"),
                checked((int)d.Seed)),
            DatasetSource.Folder => new ImageFolderSource(d.Path!),
            DatasetSource.Jsonl => new JsonlManifestSource(d.Path!),
            _ => new CsvManifestSource(d.Path!),
        };
        if (d.Source != DatasetSource.Toy && d.Count is int limit) source = new FirstItems(source, limit);

        using var teacher = StageModels.LoadTeacher(settings.Model, stage.Options, stage.Device);
        var output = Path.Combine(stage.WorkDir, "dataset");
        if (Directory.Exists(output)) Directory.Delete(output, true);
        var summary = DatasetPreparation.For(teacher).Prepare(source, output,
            new DatasetPreparationOptions { Resolution = settings.Resolution, ShardSize = d.ShardSize, Seed = d.Seed },
            p => stage.Report(p.Done / (double)Math.Max(1, p.Total), new { p.Done, p.Total, p.Bad }), stage.Cancellation);
        if (summary.Count == 0)
            throw new InvalidDataException($"dataset: no usable image–caption pairs in {summary.Source} ({summary.BadCount} rejected)");
        var id = await stage.AddOutputAsync(ArtifactKind.Dataset, output, "dataset");

        await stage.WriteFencedAsync(async db =>
        {
            if (await db.Datasets.AnyAsync(x => x.ArtifactId == id, stage.Cancellation)) return false;
            db.Datasets.Add(new Dataset
            {
                Id = Guid.NewGuid(), RunId = stage.RunId, StageId = stage.StageId, Source = summary.Source, Count = summary.Count,
                BadCount = summary.BadCount, ArtifactId = id, CreatedAt = stage.Options.Clock.GetUtcNow(),
            });
            return true;
        });
    }

    /// <summary>The first <c>dataset.count</c> pairs of a source.</summary>
    sealed class FirstItems(IImageCaptionSource source, int count) : IImageCaptionSource
    {
        public string Description => $"{source.Description} (first {count})";
        public IReadOnlyList<SourceItem> Items { get; } = source.Items.Take(count).ToList();
    }
}
