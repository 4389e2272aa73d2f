using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Toy;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.LoraMerger;
using HyperSd.Services.Runs;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Services.Evaluator;

/// <summary>The evaluation's settings, resolved at submission: the toy world's held-out prompts, or the stored copy of the
/// recipe's prompts file; <paramref name="Clip"/> is rewards.clip's folder (checked at submission), which measures real scale.</summary>
public sealed record EvaluationSettings(ModelRecipe Model, string RecipeName, IReadOnlyList<string>? Prompts, StoredInput? PromptsFile,
    EvaluationOptions Options, IReadOnlyList<SamplerSpec> StudentSamplers, IReadOnlyList<SamplerSpec> TeacherSamplers, int TeacherSteps,
    int RealImages, LoraConfig? StudentLora, IReadOnlyList<string>? Rewards = null, string? Clip = null) : IModelStageSettings
{
    /// <summary>Real scale with a CLIP folder: clip-score and fd-clip (against the run's dataset decoded by the teacher's VAE).</summary>
    public bool ClipMeasured => Model.Source != ModelSource.Toy && Clip is not null;
}

/// <summary>
/// Generates the held-out prompts with the teacher (at the evaluation's steps and at its reference steps), with the
/// distilled student (the last TSCD stage's LoRA) and the unified LoRA when the run made one, each under every sampler,
/// and with each earlier stage's fixed-step LoRA at its step count with DDIM trailing (Hyper-SD's fixed-step LoRAs),
/// measures them (toy-FID and prompt adherence with the toy
/// recognizer), and stores the evaluation rows, one image grid per model and sampler, and a results.md table. At real
/// scale it measures clip-score and fd-clip (kid-clip beside it) with rewards.clip's CLIP, the Fréchet reference being the
/// first real_images of the run's dataset decoded by the teacher's VAE (the dataset keeps latents only); without rewards.clip
/// it makes the grids only.
/// </summary>
public sealed class EvaluateModelStage : StageKind<EvaluationSettings>
{
    public const string StageName = "evaluate", Kind = "evaluate-model";
    public override string Name => Kind;
    public override string Role => Roles.Evaluator;

    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs)
    {
        var e = recipe.Evaluation;
        var file = inputs.Stored("evaluation.prompts_file");
        var toyPrompts = file is null ? RecipeMapping.ToyEvaluationPrompts(recipe) : null;
        return [new(StageName, new EvaluationSettings(recipe.Model, recipe.Name, toyPrompts, file, RecipeMapping.Evaluation(recipe),
            RecipeMapping.StudentSamplers(recipe), RecipeMapping.TeacherSamplers(recipe), e.TeacherSteps, e.RealImages,
            RecipeMapping.StudentLora(recipe), e.Rewards, recipe.Rewards?.Clip))];
    }

    /// <summary>Every trained LoRA in run order (TSCD's, then ReFL's and DMD's; the last TSCD one is the distilled student,
    /// each other one a fixed-step LoRA), and the unified LoRA if there is one.</summary>
    protected override IEnumerable<Artifact> SelectInputs(EvaluationSettings settings, IReadOnlyList<StageOutput> earlier)
    {
        var loras = earlier.Select(o => o.Artifact).Where(Jobs.RunLoras.IsTrained).ToList();
        // fd-clip's real reference is the dataset's latents
        var dataset = settings.ClipMeasured ? Required(earlier, ArtifactKind.Dataset) : null;
        return loras.Any(a => a.StageKind == TrainSegmentStage.Kind)
            ? loras.Concat(new[] { Latest(earlier, ArtifactKind.Lora, MergeLorasStage.Kind), dataset }.OfType<Artifact>())
            : throw new InvalidDataException("an evaluate-model stage needs a TSCD stage's LoRA, and the run has none");
    }

    protected override async Task ExecuteAsync(StageContext stage, EvaluationSettings settings)
    {
        var unified = stage.InputsOf(ArtifactKind.Lora).Where(a => a.StageKind == MergeLorasStage.Kind).ToList();
        // the LoRAs that continue a TSCD one (ReFL's, DMD's)
        var continued = stage.InputsOf(ArtifactKind.Lora).Where(a => a.StageKind != TrainSegmentStage.Kind).Except(unified).ToList();
        var loras = stage.InputsOf(ArtifactKind.Lora).Where(a => a.StageKind == TrainSegmentStage.Kind).ToList();
        if (loras.Count == 0) throw new InvalidDataException($"stage {stage.Stage}: no LoRA input to evaluate");
        var final = loras[^1];
        // the earlier TSCD stages' and the ReFL and DMD stages' LoRAs, each at its own step count
        var fixedStep = loras.SkipLast(1).Concat(continued).Where(a => a.Steps is { } s && settings.Options.Steps.Contains(s)).ToList();
        var prompts = settings.Prompts is { } toy ? PromptSet.Toy(toy.Count) with { Prompts = toy }
            : PromptSet.File(Path.GetFileName(settings.PromptsFile!.Path),
                await settings.PromptsFile!.ReadPromptsAsync(stage.Store, stage.Cancellation));

        using var teacher = StageModels.LoadTeacher(settings.Model, stage.Options, stage.Device);
        // the toy world measures with its recognizer; at real scale there is no image-feature model yet: images only
        bool measured = settings.Model.Source == ModelSource.Toy;
        using var recognizer = measured ? StageModels.LoadRecognizer(stage.Options, stage.Device) : null;
        using var judge = measured ? StageModels.LoadJudge(stage.Device) : null;
        var notMeasured = "Not measured: FD and prompt adherence need the toy world's recognizer, " +
                          $"and model.source is {settings.Model.Source}; set rewards.clip (a CLIP folder) for clip-score and fd-clip.";
        if (!measured && !settings.ClipMeasured) stage.Logger.LogWarning("{Why} The evaluation makes the image grids only.", notMeasured);
        using var clip = settings.ClipMeasured ? ClipEmbedder.FromPretrained(settings.Clip!, device: stage.Device) : null;
        var clipFeatures = clip is null ? null : new ClipImageFeatures(clip); // disposing the embedder is the using's
        var (real, realCount) = clipFeatures is null ? (null, 0)
            : DatasetFeatures(clipFeatures, teacher, stage.PathOf(stage.Input(ArtifactKind.Dataset)), settings.RealImages);
        var measuredWith = clip is null ? null : $"Measured with CLIP from {settings.Clip}: clip-score, and fd-clip / kid-clip " +
            $"against {realCount} real images (the run's dataset, its first {realCount} latents decoded by the teacher's VAE).";
        int total = settings.TeacherSamplers.Count + (measured ? 1 + settings.StudentSamplers.Count : 0)
                    + settings.StudentSamplers.Count * (1 + unified.Count) + fixedStep.Count, done = 0;
        using var evaluation = new ModelEvaluation(teacher, recognizer, prompts, settings.Options, settings.RealImages, stage.WorkDir,
            scorers: clip is null ? null : [new ClipScore(clip)], judge: judge,
            samplesDir: settings.Rewards is { Count: > 0 } ? Path.Combine(stage.WorkDir, "samples") : null,
            features: clipFeatures, realFeatures: real)
        {
            Evaluated = (model, sampler) =>
            {
                done++;
                stage.Report(done / (double)total, new { Done = done, Total = total, Model = model, Sampler = sampler });
                stage.Cancellation.ThrowIfCancellationRequested();
            },
        };

        evaluation.Evaluate("teacher", settings.TeacherSamplers);
        if (measured)
        {
            // the teacher at its reference steps, and the untrained control (a LoRA at zero)
            evaluation.Evaluate("teacher", [settings.TeacherSamplers[0]], [settings.TeacherSteps], grid: false);
            evaluation.EvaluateUntrained(settings.StudentSamplers);
        }
        // the distilled student, and the unified LoRA (its merged file, rank and alpha its own), under every student sampler
        using (var student = StageModels.LoadStudent(teacher.Unet, settings.StudentLora, stage.PathOf(final)))
            evaluation.Evaluate(ModelName(final), student, settings.StudentSamplers);
        foreach (var artifact in unified)
        {
            using var student = SegmentStudent.WithLora(teacher.Unet,
                LoraFormats.Load(MergeLorasStage.LoraFile(stage.PathOf(artifact)), teacher.Unet, teacher.Unet.parameters().First().device));
            evaluation.Evaluate(MergeLorasStage.StageName, student, settings.StudentSamplers);
        }
        // each earlier stage's fixed-step LoRA at its own step count with DDIM trailing
        foreach (var artifact in fixedStep)
        {
            using var student = StageModels.LoadStudent(teacher.Unet, settings.StudentLora, stage.PathOf(artifact));
            evaluation.Evaluate(ModelName(artifact), student, [SamplerSpec.DdimTrailing()], [artifact.Steps!.Value]);
        }

        await StoreRowsAsync(stage, evaluation.Rows);
        foreach (var path in evaluation.Grids)
            await stage.AddOutputAsync(ArtifactKind.Grid, path, Path.GetFileName(path));
        // the images the reward-scorer's score-evaluation stage scores
        if (evaluation.Samples is { } samples) await stage.AddOutputAsync(ArtifactKind.Images, samples.Root, "samples");
        var (report, json) = evaluation.WriteReport(settings.RecipeName, notMeasured, measuredWith);
        await stage.AddOutputAsync(ArtifactKind.Report, report, "results.md");
        await stage.AddOutputAsync(ArtifactKind.Report, json, "results.json");
    }

    /// <summary>CLIP features of the dataset's first <paramref name="count"/> images, decoded from its latents in batches.</summary>
    static (Tensor Features, int Count) DatasetFeatures(ClipImageFeatures features, IDiffusionPipeline teacher, string dir, int count)
    {
        using var data = StageModels.LoadDataset(dir);
        int n = Math.Min(count, data.Count);
        var parts = new List<Tensor>();
        try
        {
            for (int i = 0; i < n; i += 8)
            {
                using var _ = no_grad();
                using var latents = data.Latents[i..Math.Min(n, i + 8)].to(teacher.DType, teacher.Device);
                using var images = teacher.Vae.DecodeLatents(latents);
                parts.Add(features.Features(images));
            }
            return (torch.cat(parts), n);
        }
        finally { foreach (var p in parts) p.Dispose(); }
    }

    /// <summary>A LoRA's model name in the evaluation rows: the name of the stage that made it.</summary>
    static string ModelName(Artifact lora) => Jobs.RunLoras.StageNameOf(lora);

    /// <summary>Adds the rows not yet stored: (run, model, sampler, steps, metric) is unique, so a redelivered evaluation
    /// adds nothing.</summary>
    public static Task StoreRowsAsync(StageContext stage, IReadOnlyList<EvaluationRow> rows) => stage.WriteFencedAsync(async db =>
    {
        var existing = (await db.Evaluations.Where(v => v.RunId == stage.RunId)
                .Select(v => new { v.Model, v.Sampler, v.Steps, v.Metric }).ToListAsync(stage.Cancellation))
            .Select(v => (v.Model, v.Sampler, v.Steps, v.Metric)).ToHashSet();
        var now = stage.Options.Clock.GetUtcNow();
        foreach (var r in rows.Where(r => existing.Add((r.Model, r.Sampler, r.Steps, r.Metric))))
            db.Evaluations.Add(new Evaluation
            {
                Id = Guid.NewGuid(), RunId = stage.RunId, StageId = stage.StageId, Model = r.Model, Sampler = r.Sampler, Steps = r.Steps,
                Metric = r.Metric, Value = r.Value, Low = r.Low, High = r.High, CreatedAt = now,
            });
        return existing.Count;
    });
}
