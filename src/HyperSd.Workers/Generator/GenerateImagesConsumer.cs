using System.Text.Json;
using HyperSd.Contracts;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Workers.Execution;
using HyperSd.Workers.Runs;

namespace HyperSd.Workers.Generator;

/// <summary>
/// Bulk prompt-to-image generation with the distilled student (the TSCD stage whose k equals the steps, as Hyper-SD's
/// fixed-step LoRAs are used, else the last stage): image i is prompt i / images_per_prompt with seed
/// seed + i, written as a PNG that carries its parameters, listed in manifest.jsonl, stored as one "images" artifact.
/// Images already written by an earlier attempt are kept, so a re-dispatched stage picks up where it stopped.
/// </summary>
public sealed class GenerateImagesConsumer(StageRuntime runtime) : StageConsumer<GenerateImages>(runtime)
{
    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    sealed record ManifestLine(string File, string Prompt, long Seed, int Steps, string Sampler, string Model);

    protected override async Task ExecuteAsync(StageContext stage, GenerateImages command)
    {
        var recipe = stage.Recipe;
        var g = recipe.Generation ?? throw new InvalidDataException($"stage {stage.Stage}: the recipe has no generation section");
        var prompts = g.Prompts ?? Recipes.Recipe.ReadPromptsFile(g.PromptsFile!, "generation.prompts_file");
        var images = Enumerable.Range(0, prompts.Count * g.ImagesPerPrompt)
            .Select(i => new GenerationJob($"{i:D5}.png", prompts[i / g.ImagesPerPrompt], g.Seed + i)).ToList();
        // Hyper-SD's fixed-step LoRA when a TSCD stage has k = steps, else the last stage's
        var loras = stage.InputsOf(RunPlan.LoraKind);
        if (loras.Count == 0) throw new InvalidDataException($"stage {stage.Stage}: no LoRA input to generate with");
        var loraArtifact = loras.LastOrDefault(a => RunPlan.SegmentsOfStage(RunPlan.StageOfPath(a.Path)) == g.Steps) ?? loras[^1];
        var model = $"{recipe.Name}/{RunPlan.StageOfPath(loraArtifact.Path)}";
        var sampler = recipe.ToGenerationSampler();

        var dir = Path.Combine(stage.WorkDir, "images");
        if (!images.All(i => File.Exists(Path.Combine(dir, i.File))))
        {
            using var teacher = StageModels.LoadTeacher(recipe, stage.Options, stage.Device);
            using var student = StageModels.LoadStudent(teacher.Unet, recipe.ToTscdConfig().Stage, stage.PathOf(loraArtifact));
            var pipeline = StageModels.WithStudent(teacher, student);
            pipeline.Scheduler = sampler.Build(teacher.Scheduler.Config);
            int size = recipe.ImageResolution();
            BatchGeneration.Run(pipeline.Generate, images, dir,
                new GenerationRequest { Prompts = [], Steps = g.Steps, GuidanceScale = sampler.GuidanceScale, Eta = sampler.Eta, Height = size, Width = size, ModelId = model },
                g.BatchSize, resume: true, progress: done => stage.Report(done / (double)images.Count, new { Images = done, Total = images.Count }),
                cancellationToken: stage.Cancellation);
        }
        await File.WriteAllLinesAsync(Path.Combine(dir, "manifest.jsonl"),
            images.Select(i => JsonSerializer.Serialize(new ManifestLine(i.File, i.Prompt, i.Seed, g.Steps, sampler.Name, model), Json)),
            stage.Cancellation);
        await stage.AddOutputAsync(RunPlan.ImagesKind, dir, "images");
    }

    protected override IStageEvent Completed(GenerateImages command, Guid[] outputs) =>
        new ImagesGenerated(command.RunId, command.StageId, command.Attempt, outputs);
}
