using System.Text.Json;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.LoraMerger;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;

namespace HyperSd.Services.Generator;

/// <summary>The generate stage's settings, resolved at submission: the recipe's prompts, or the stored copy of its prompts file.</summary>
public sealed record GenerationSettings(ModelRecipe Model, string RecipeName, IReadOnlyList<string>? Prompts, StoredInput? PromptsFile,
    int ImagesPerPrompt, int Steps, SamplerSpec Sampler, long Seed, int BatchSize, int Resolution, LoraConfig? StudentLora)
    : IModelStageSettings;

/// <summary>
/// Bulk prompt-to-image generation with the distilled student (the unified LoRA when the run made one; else the TSCD
/// LoRA made for the generation's step count, as Hyper-SD's fixed-step LoRAs are used, else the last stage's), when the
/// recipe has a <c>generation</c> section: image i is prompt i / images_per_prompt with seed seed + i, written as a PNG
/// that carries its parameters, listed in manifest.jsonl, stored as one "images" artifact. Images already written by an
/// earlier attempt are kept, so a re-dispatched stage picks up where it stopped.
/// </summary>
public sealed class GenerateImagesStage : StageKind<GenerationSettings>
{
    public const string StageName = "generate", Kind = "generate-images";
    public override string Name => Kind;
    public override string Role => Roles.Generator;

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    sealed record ManifestLine(string File, string Prompt, long Seed, int Steps, string Sampler, string Model);

    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs)
    {
        if (recipe.Generation is not { } g) return [];
        return [new(StageName, new GenerationSettings(recipe.Model, recipe.Name, g.Prompts, inputs.Stored("generation.prompts_file"),
            g.ImagesPerPrompt, g.Steps,
            RecipeMapping.Sampler(g.Sampler, g.TcdEta), g.Seed, g.BatchSize, RecipeMapping.ImageResolution(recipe),
            RecipeMapping.StudentLora(recipe)))];
    }

    /// <summary>The unified LoRA, else the latest LoRA (DMD's after ReFL's after TSCD's) made for the generation's step count,
    /// else the last one.</summary>
    protected override IEnumerable<Artifact> SelectInputs(GenerationSettings settings, IReadOnlyList<StageOutput> earlier)
    {
        if (Latest(earlier, ArtifactKind.Lora, MergeLorasStage.Kind) is { } unified) return [unified];
        var loras = earlier.Select(o => o.Artifact).Where(Jobs.RunLoras.IsTrained).ToList();
        if (loras.Count == 0) throw new InvalidDataException("a generate-images stage needs a TSCD stage's LoRA, and the run has none");
        return [loras.LastOrDefault(a => a.Steps == settings.Steps) ?? loras[^1]];
    }

    protected override async Task ExecuteAsync(StageContext stage, GenerationSettings g)
    {
        var prompts = g.Prompts ?? await g.PromptsFile!.ReadPromptsAsync(stage.Store, stage.Cancellation);
        var images = Enumerable.Range(0, prompts.Count * g.ImagesPerPrompt)
            .Select(i => new GenerationItem($"{i:D5}.png", prompts[i / g.ImagesPerPrompt], g.Seed + i)).ToList();
        var lora = stage.Input(ArtifactKind.Lora);
        var model = $"{g.RecipeName}/{Jobs.RunLoras.StageNameOf(lora)}";

        var dir = Path.Combine(stage.WorkDir, "images");
        if (!images.All(i => File.Exists(Path.Combine(dir, i.File))))
        {
            using var teacher = StageModels.LoadTeacher(g.Model, stage.Options, stage.Device);
            var reference = await StageModels.DescribeTeacherAsync(g.Model, stage.Options, stage.Cancellation);
            SegmentStudent? student = null;
            IDiffusionPipeline pipeline = teacher;
            if (g.StudentLora is null)
            {
                // a fully fine-tuned UNet: not a file the images can name, so they record no model path to load again
                student = StageModels.LoadStudent(teacher.Unet, null, stage.PathOf(lora));
                pipeline = StageModels.WithStudent(teacher, student);
                reference = new ModelReference(model);
            }
            // the stage's LoRA file, attached as any LoRA is, so every image records it (id, file, sha256, scale 1)
            else teacher.LoadLora(MergeLorasStage.LoraFile(stage.PathOf(lora)), 1.0, model);
            using var _ = student;
            pipeline.Scheduler = g.Sampler.Build(teacher.Scheduler.Config);
            BatchGeneration.Run(pipeline.Generate, images, dir,
                new GenerationRequest
                {
                    Prompts = [], Steps = g.Steps, GuidanceScale = g.Sampler.GuidanceScale, Eta = g.Sampler.Eta, Height = g.Resolution,
                    Width = g.Resolution, Model = reference,
                },
                g.BatchSize, resume: true,
                progress: done => stage.Report(done / (double)images.Count, new { Images = done, Total = images.Count }),
                cancellationToken: stage.Cancellation);
        }
        await File.WriteAllLinesAsync(Path.Combine(dir, "manifest.jsonl"),
            images.Select(i => JsonSerializer.Serialize(new ManifestLine(i.File, i.Prompt, i.Seed, g.Steps, g.Sampler.Name, model), Json)),
            stage.Cancellation);
        await stage.AddOutputAsync(ArtifactKind.Images, dir, "images");
    }
}
