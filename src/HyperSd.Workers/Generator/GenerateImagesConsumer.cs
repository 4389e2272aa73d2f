using System.Text.Json;
using HyperSd.Contracts;
using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Workers.Execution;
using HyperSd.Workers.Runs;

namespace HyperSd.Workers.Generator;

/// <summary>
/// Bulk prompt-to-image generation with the distilled student: image i is prompt i / images_per_prompt with seed
/// seed + i, written as a PNG that carries its parameters, listed in manifest.jsonl, stored as one "images" artifact.
/// Batches already written by an earlier attempt are kept, so a re-dispatched stage picks up where it stopped.
/// </summary>
public sealed class GenerateImagesConsumer(StageRuntime runtime) : StageConsumer<GenerateImages>(runtime)
{
    const string Partial = ".partial.png";
    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    sealed record ManifestLine(string File, string Prompt, long Seed, int Steps, string Sampler, string Model);

    protected override async Task ExecuteAsync(StageContext stage, GenerateImages command)
    {
        var recipe = stage.Recipe;
        var g = recipe.Generation ?? throw new InvalidDataException($"stage {stage.Stage}: the recipe has no generation section");
        var prompts = g.Prompts ?? Recipes.Recipe.ReadPromptsFile(g.PromptsFile!, "generation.prompts_file");
        var images = Enumerable.Range(0, prompts.Count * g.ImagesPerPrompt)
            .Select(i => (File: $"{i:D5}.png", Prompt: prompts[i / g.ImagesPerPrompt], Seed: g.Seed + i)).ToList();
        var loraArtifact = stage.Input(RunPlan.LoraKind);
        var model = $"{recipe.Name}/{RunPlan.StageOfPath(loraArtifact.Path)}";
        var sampler = recipe.ToGenerationSampler();

        var dir = Path.Combine(stage.WorkDir, "images");
        Directory.CreateDirectory(dir);
        foreach (var partial in Directory.EnumerateFiles(dir, "*" + Partial)) File.Delete(partial);
        int done = images.TakeWhile(i => File.Exists(Path.Combine(dir, i.File))).Count();
        stage.Report(done / (double)images.Count, new { Images = done, Total = images.Count });
        if (done < images.Count)
        {
            using var teacher = StageModels.LoadTeacher(recipe, stage.Options, stage.Device);
            using var student = StageModels.LoadStudent(teacher.Unet, recipe.ToTscdConfig().Stage, stage.PathOf(loraArtifact));
            var pipeline = StageModels.WithStudent(teacher, student);
            pipeline.Scheduler = sampler.Build(teacher.Scheduler.Config);
            int size = recipe.ImageResolution();
            for (int start = done; start < images.Count; start += g.BatchSize)
            {
                stage.Cancellation.ThrowIfCancellationRequested();
                var batch = images.Skip(start).Take(g.BatchSize).ToList();
                using var result = pipeline.Generate(new GenerationRequest
                {
                    Prompts = batch.Select(b => b.Prompt).ToList(), Steps = g.Steps, GuidanceScale = sampler.GuidanceScale, Eta = sampler.Eta,
                    Height = size, Width = size, Seeds = batch.Select(b => b.Seed).ToList(), ModelId = model,
                });
                for (int i = 0; i < batch.Count; i++)
                {
                    // written whole, then renamed: a file under its final name is never half an image
                    var path = Path.Combine(dir, batch[i].File);
                    ImageFiles.SavePng(result.Images[i], path + Partial, result.Parameters[i].ToPngText());
                    File.Move(path + Partial, path, overwrite: true);
                }
                stage.Report((start + batch.Count) / (double)images.Count, new { Images = start + batch.Count, Total = images.Count });
            }
        }
        await File.WriteAllLinesAsync(Path.Combine(dir, "manifest.jsonl"),
            images.Select(i => JsonSerializer.Serialize(new ManifestLine(i.File, i.Prompt, i.Seed, g.Steps, sampler.Name, model), Json)),
            stage.Cancellation);
        await stage.AddOutputAsync(RunPlan.ImagesKind, dir, "images");
    }

    protected override IStageEvent Completed(GenerateImages command, Guid[] outputs) =>
        new ImagesGenerated(command.RunId, command.StageId, command.Attempt, outputs);
}
