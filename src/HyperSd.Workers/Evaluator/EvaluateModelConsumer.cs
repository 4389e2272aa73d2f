using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Toy;
using HyperSd.Recipes;
using HyperSd.Workers.Execution;
using HyperSd.Workers.Runs;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;

namespace HyperSd.Workers.Evaluator;

/// <summary>
/// Generates the held-out prompts with the teacher (at the evaluation's steps and at its reference steps) and with the
/// distilled student (the last TSCD stage) under each sampler, and each earlier stage k's student at k steps with DDIM
/// trailing (Hyper-SD's fixed-step LoRAs), measures them (toy-FID and prompt adherence with the toy recognizer), and
/// stores the evaluation rows, one image grid per model and sampler, and a results.md table. At real scale (no image
/// feature model yet) it makes the grids only.
/// </summary>
public sealed class EvaluateModelConsumer(StageRuntime runtime) : StageConsumer<EvaluateModel>(runtime)
{
    /// <summary>Seed of the real toy images whose features are the Fréchet reference (as the toy experiment's).</summary>
    const int RealImageSeed = 5_000_001;

    protected override async Task ExecuteAsync(StageContext stage, EvaluateModel command)
    {
        var recipe = stage.Recipe;
        var e = recipe.Evaluation;
        var prompts = e.PromptsFile is { } file
            ? Recipes.Recipe.ReadPromptsFile(file, "evaluation.prompts_file")
            : ToyWorld.EvaluationPrompts(e.Prompts ?? throw new ArgumentException("evaluation.prompts or evaluation.prompts_file is required"));
        // the last TSCD stage's LoRA at every step count and sampler; each earlier stage k's at k steps (its fixed-step use)
        var loras = stage.InputsOf(RunPlan.LoraKind);
        if (loras.Count == 0) throw new InvalidDataException($"stage {stage.Stage}: no LoRA input to evaluate");
        var loraArtifact = loras[^1];
        var studentName = RunPlan.StageOfPath(loraArtifact.Path);
        var fixedStep = loras.SkipLast(1).Select(a => (Artifact: a, Name: RunPlan.StageOfPath(a.Path)))
            .Where(l => e.Steps.Contains(RunPlan.SegmentsOfStage(l.Name))).ToList();

        using var teacher = StageModels.LoadTeacher(recipe, stage.Options, stage.Device);
        // the toy world measures with its recognizer; at real scale there is no image-feature model yet: images only
        bool measured = recipe.Model.Source == ModelSource.Toy;
        using var recognizer = measured ? StageModels.LoadRecognizer(stage.Options, stage.Device) : null;
        var metrics = recognizer is null ? null : new ToyRecognizerMetrics(recognizer);
        using var real = metrics?.RealFeatures(e.RealImages, RealImageSeed);
        var notMeasured = $"Not measured: FD and prompt adherence need the toy world's recognizer, and model.source is {recipe.Model.Source}.";
        if (!measured) stage.Logger.LogWarning("{Why} The evaluation makes the image grids only.", notMeasured);
        var evaluator = new Distillation.Evaluation.Evaluator(metrics, real, metrics);
        var options = recipe.ToEvaluationOptions();
        var samplers = recipe.ToSamplerSpecs();
        var outDir = Path.Combine(stage.WorkDir, $"a{stage.Attempt}");
        Directory.CreateDirectory(outDir);
        var rows = new List<EvaluationRow>();
        var grids = new List<string>();
        var teacherSamplers = recipe.ToTeacherSamplerSpecs();
        int total = teacherSamplers.Count + (measured ? 1 : 0) + samplers.Count + fixedStep.Count, done = 0;
        void Evaluated(string model, string sampler)
        {
            done++;
            stage.Report(done / (double)total, new { Done = done, Total = total, Model = model, Sampler = sampler });
        }

        string grid;
        foreach (var teacherSampler in teacherSamplers)
        {
            grid = Path.Combine(outDir, $"grid-teacher-{teacherSampler.Name}.png");
            rows.AddRange(evaluator.Evaluate("teacher", teacher, prompts, teacherSampler, options, grid));
            grids.Add(grid);
            Evaluated("teacher", teacherSampler.Name);
            stage.Cancellation.ThrowIfCancellationRequested();
        }
        if (measured)
        {
            rows.AddRange(evaluator.Evaluate("teacher", teacher, prompts, teacherSamplers[0], options with { Steps = [e.TeacherSteps] }));
            Evaluated("teacher", $"{teacherSamplers[0].Name}@{e.TeacherSteps}");
        }

        var trainedAs = recipe.ToTscdConfig().Stage;
        using (var student = StageModels.LoadStudent(teacher.Unet, trainedAs, stage.PathOf(loraArtifact)))
        {
            var pipeline = StageModels.WithStudent(teacher, student);
            try
            {
                foreach (var sampler in samplers)
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
        foreach (var (artifact, name) in fixedStep)
        {
            stage.Cancellation.ThrowIfCancellationRequested();
            int k = RunPlan.SegmentsOfStage(name);
            using var student = StageModels.LoadStudent(teacher.Unet, trainedAs, stage.PathOf(artifact));
            var pipeline = StageModels.WithStudent(teacher, student);
            grid = Path.Combine(outDir, $"grid-{name}-ddim-trailing.png");
            try { rows.AddRange(evaluator.Evaluate(name, pipeline, prompts, SamplerSpec.DdimTrailing(), options with { Steps = [k] }, grid)); }
            finally { student.Lora?.Detach(); }
            grids.Add(grid);
            Evaluated(name, $"ddim-trailing@{k}");
        }

        await StoreRowsAsync(stage, rows);
        foreach (var path in grids)
            await stage.AddOutputAsync(RunPlan.GridKind, path, Path.GetFileName(path));
        var report = Path.Combine(outDir, "results.md");
        var table = measured ? EvaluationTable.Markdown(rows)
            : $"{notMeasured} The image grids are this stage's other outputs:\n\n{string.Join("\n", grids.Select(g => $"- {Path.GetFileName(g)}"))}\n";
        await File.WriteAllTextAsync(report, $"# {recipe.Name}\n\n{table}", stage.Cancellation);
        await stage.AddOutputAsync(RunPlan.ReportKind, report, "results.md");
    }

    /// <summary>Adds the rows not yet stored: (run, model, sampler, steps, metric) is unique, so a redelivered evaluation adds nothing.</summary>
    static async Task StoreRowsAsync(StageContext stage, IReadOnlyList<EvaluationRow> rows)
    {
        await using var db = await stage.Db.CreateDbContextAsync(stage.Cancellation);
        var existing = (await db.Evaluations.Where(v => v.RunId == stage.RunId)
                .Select(v => new { v.Model, v.Sampler, v.Steps, v.Metric }).ToListAsync(stage.Cancellation))
            .Select(v => (v.Model, v.Sampler, v.Steps, v.Metric)).ToHashSet();
        var now = DateTimeOffset.UtcNow;
        foreach (var r in rows.Where(r => existing.Add((r.Model, r.Sampler, r.Steps, r.Metric))))
            db.Evaluations.Add(new Evaluation
            {
                Id = Guid.NewGuid(), RunId = stage.RunId, StageId = stage.StageId, Model = r.Model, Sampler = r.Sampler, Steps = r.Steps,
                Metric = r.Metric, Value = r.Value, CreatedAt = now,
            });
        await db.SaveChangesAsync(stage.Cancellation);
    }

    protected override IStageEvent Completed(EvaluateModel command, Guid[] outputs) =>
        new ModelEvaluated(command.RunId, command.StageId, command.Attempt, outputs);
}
