using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Lora;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Toy;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Runs;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Evaluator;

/// <summary>The evaluation's settings, resolved at submission (the prompts are the prompt file's lines as read then).</summary>
public sealed record EvaluationSettings(ModelRecipe Model, string RecipeName, IReadOnlyList<string> Prompts, EvaluationOptions Options,
    IReadOnlyList<SamplerSpec> StudentSamplers, IReadOnlyList<SamplerSpec> TeacherSamplers, int TeacherSteps, int RealImages,
    LoraConfig? StudentLora) : IModelStageSettings;

/// <summary>
/// Generates the held-out prompts with the teacher (at the evaluation's steps and at its reference steps) and with the
/// distilled student (the last TSCD stage's LoRA) under each sampler, and each earlier stage's fixed-step LoRA at its
/// step count with DDIM trailing (Hyper-SD's fixed-step LoRAs), measures them (toy-FID and prompt adherence with the toy
/// recognizer), and stores the evaluation rows, one image grid per model and sampler, and a results.md table. At real
/// scale (no image feature model yet) it makes the grids only.
/// </summary>
public sealed class EvaluateModelStage : StageKind<EvaluationSettings>
{
    public const string StageName = "evaluate";
    public override string Name => "evaluate-model";
    public override string Role => Roles.Evaluator;

    /// <summary>Seed of the real toy images whose features are the Fréchet reference.</summary>
    const int RealImageSeed = 5_000_001;

    public override IEnumerable<PlannedStage> Plan(Recipe recipe)
    {
        var e = recipe.Evaluation;
        return [new(StageName, new EvaluationSettings(recipe.Model, recipe.Name, RecipeMapping.EvaluationPrompts(recipe),
            RecipeMapping.Evaluation(recipe), RecipeMapping.StudentSamplers(recipe), RecipeMapping.TeacherSamplers(recipe), e.TeacherSteps,
            e.RealImages, RecipeMapping.StudentLora(recipe)))];
    }

    /// <summary>Every TSCD stage's LoRA, in run order: the last is the distilled student; each earlier one is also a
    /// fixed-step LoRA.</summary>
    protected override IEnumerable<Artifact> SelectInputs(EvaluationSettings settings, IReadOnlyList<StageOutput> earlier)
    {
        var loras = earlier.Where(o => o.Artifact is { Kind: ArtifactKind.Lora, StageKind: TrainSegmentStage.Kind })
            .Select(o => o.Artifact).ToList();
        return loras.Count > 0 ? loras
            : throw new InvalidDataException("an evaluate-model stage needs a TSCD stage's LoRA, and the run has none");
    }

    protected override async Task ExecuteAsync(StageContext stage, EvaluationSettings settings)
    {
        var loras = stage.InputsOf(ArtifactKind.Lora);
        if (loras.Count == 0) throw new InvalidDataException($"stage {stage.Stage}: no LoRA input to evaluate");
        var final = loras[^1];
        var fixedStep = loras.SkipLast(1).Where(a => a.Steps is { } s && settings.Options.Steps.Contains(s)).ToList();
        var prompts = settings.Prompts;
        var options = settings.Options;

        using var teacher = StageModels.LoadTeacher(settings.Model, stage.Options, stage.Device);
        // the toy world measures with its recognizer; at real scale there is no image-feature model yet: images only
        bool measured = settings.Model.Source == ModelSource.Toy;
        using var recognizer = measured ? StageModels.LoadRecognizer(stage.Options, stage.Device) : null;
        var metrics = recognizer is null ? null : new ToyRecognizerMetrics(recognizer);
        using var real = metrics?.RealFeatures(settings.RealImages, RealImageSeed);
        var notMeasured = "Not measured: FD and prompt adherence need the toy world's recognizer, " +
                          $"and model.source is {settings.Model.Source}.";
        if (!measured) stage.Logger.LogWarning("{Why} The evaluation makes the image grids only.", notMeasured);
        var evaluator = new ModelEvaluator(metrics, real, metrics);
        var outDir = stage.WorkDir;
        Directory.CreateDirectory(outDir);
        var rows = new List<EvaluationRow>();
        var grids = new List<string>();
        int total = settings.TeacherSamplers.Count + (measured ? 1 : 0) + settings.StudentSamplers.Count + fixedStep.Count, done = 0;
        void Evaluated(string model, string sampler)
        {
            done++;
            stage.Report(done / (double)total, new { Done = done, Total = total, Model = model, Sampler = sampler });
        }

        string grid;
        foreach (var teacherSampler in settings.TeacherSamplers)
        {
            grid = Path.Combine(outDir, $"grid-teacher-{teacherSampler.Name}.png");
            rows.AddRange(evaluator.Evaluate("teacher", teacher, prompts, teacherSampler, options, grid));
            grids.Add(grid);
            Evaluated("teacher", teacherSampler.Name);
            stage.Cancellation.ThrowIfCancellationRequested();
        }
        if (measured)
        {
            var reference = settings.TeacherSamplers[0];
            rows.AddRange(evaluator.Evaluate("teacher", teacher, prompts, reference, options with { Steps = [settings.TeacherSteps] }));
            Evaluated("teacher", $"{reference.Name}@{settings.TeacherSteps}");
        }

        var studentName = ModelName(final);
        using (var student = StageModels.LoadStudent(teacher.Unet, settings.StudentLora, stage.PathOf(final)))
        {
            var pipeline = StageModels.WithStudent(teacher, student);
            try
            {
                foreach (var sampler in settings.StudentSamplers)
                {
                    stage.Cancellation.ThrowIfCancellationRequested();
                    grid = Path.Combine(outDir, $"grid-{studentName}-{sampler.Name}.png");
                    rows.AddRange(evaluator.Evaluate(studentName, pipeline, prompts, sampler, options, grid));
                    grids.Add(grid);
                    Evaluated(studentName, sampler.Name);
                }
            }
            finally { student.Lora?.Detach(); }
        }
        foreach (var artifact in fixedStep)
        {
            stage.Cancellation.ThrowIfCancellationRequested();
            int steps = artifact.Steps!.Value;
            var name = ModelName(artifact);
            using var student = StageModels.LoadStudent(teacher.Unet, settings.StudentLora, stage.PathOf(artifact));
            var pipeline = StageModels.WithStudent(teacher, student);
            grid = Path.Combine(outDir, $"grid-{name}-ddim-trailing.png");
            try
            {
                rows.AddRange(evaluator.Evaluate(
                    name, pipeline, prompts, SamplerSpec.DdimTrailing(), options with { Steps = [steps] }, grid));
            }
            finally { student.Lora?.Detach(); }
            grids.Add(grid);
            Evaluated(name, $"ddim-trailing@{steps}");
        }

        await StoreRowsAsync(stage, rows);
        foreach (var path in grids)
            await stage.AddOutputAsync(ArtifactKind.Grid, path, Path.GetFileName(path));
        var report = Path.Combine(outDir, "results.md");
        var table = measured ? EvaluationTable.Markdown(rows)
            : $"{notMeasured} The image grids are this stage's other outputs:\n\n" +
              $"{string.Join("\n", grids.Select(g => $"- {Path.GetFileName(g)}"))}\n";
        await File.WriteAllTextAsync(report, $"# {settings.RecipeName}\n\n{table}", stage.Cancellation);
        await stage.AddOutputAsync(ArtifactKind.Report, report, "results.md");
    }

    /// <summary>A TSCD LoRA's model name in the evaluation rows: the name of the stage that made it.</summary>
    static string ModelName(Artifact lora) => TrainSegmentStage.StageName(lora.Segments
        ?? throw new InvalidDataException($"LoRA artifact {lora.Id} ({lora.Path}) has no segments (k) recorded"));

    /// <summary>Adds the rows not yet stored: (run, model, sampler, steps, metric) is unique, so a redelivered evaluation
    /// adds nothing.</summary>
    static Task StoreRowsAsync(StageContext stage, IReadOnlyList<EvaluationRow> rows) => stage.WriteFencedAsync(async db =>
    {
        var existing = (await db.Evaluations.Where(v => v.RunId == stage.RunId)
                .Select(v => new { v.Model, v.Sampler, v.Steps, v.Metric }).ToListAsync(stage.Cancellation))
            .Select(v => (v.Model, v.Sampler, v.Steps, v.Metric)).ToHashSet();
        var now = stage.Options.Clock.GetUtcNow();
        foreach (var r in rows.Where(r => existing.Add((r.Model, r.Sampler, r.Steps, r.Metric))))
            db.Evaluations.Add(new Evaluation
            {
                Id = Guid.NewGuid(), RunId = stage.RunId, StageId = stage.StageId, Model = r.Model, Sampler = r.Sampler, Steps = r.Steps,
                Metric = r.Metric, Value = r.Value, CreatedAt = now,
            });
        return existing.Count;
    });
}
