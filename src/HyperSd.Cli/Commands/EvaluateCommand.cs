using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Toy;
using HyperSd.Services.Evaluator;
using HyperSd.Services.Generator;
using HyperSd.Services.Jobs;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Cli.Commands;

/// <summary>
/// <c>hypersd evaluate</c>: any model (the toy teacher, a diffusers folder, a single-file checkpoint) with zero or more
/// LoRAs (files, or a run's), at chosen steps and samplers, on a prompt set (the toy held-out captions by default); the
/// evaluate-model stage's measurement (<see cref="ModelEvaluation"/>), so a run's LoRA re-evaluated on its prompts and
/// seeds gives its stored rows. Prints the table, writes results.md, results.json and grids, and with --run stores the rows.
/// </summary>
public static class EvaluateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model")
        {
            Description = "toy (the embedded toy teacher), a diffusers folder or a single-file SD1.x .safetensors",
            DefaultValueFactory = _ => ImageModels.ToyId,
        };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "CLIP tokenizer folder (single-file checkpoints)" };
        var loras = new Option<string[]>("--lora")
        {
            Description = "a LoRA .safetensors, optionally with :scale (repeat: applied together)",
        };
        var runLoras = new Option<string[]>("--run-lora")
        {
            Description = "a run's LoRA from the store: RUN[:STEPS[:SCALE]], RUN its id or name, STEPS the step count of its fixed-step " +
                          "LoRA (default: its unified LoRA, else its last)",
        };
        var name = new Option<string?>("--name") { Description = "the evaluated model's row name (default: teacher, or the LoRAs')" };
        var steps = new Option<string>("--steps") { Description = "step counts, comma-separated", DefaultValueFactory = _ => "1,2,4,8" };
        var samplers = new Option<string[]>("--sampler")
        {
            Description = "ddim (the model's own spacing), ddim-trailing or tcd (repeat); default: ddim-trailing and tcd with a LoRA, " +
                          "ddim and ddim-trailing without",
        };
        var guidance = new Option<string?>("--guidance")
        {
            Description = "CFG scale(s), comma-separated for a sweep (default: 1 with a LoRA, else --teacher-guidance)",
        };
        var tcdEta = new Option<double>("--tcd-eta") { Description = "TCD's gamma", DefaultValueFactory = _ => 0.3 };
        var controls = new Option<bool>("--controls")
        {
            Description = "beside a LoRA: the untrained control (the base without CFG on the same samplers) and the teacher (DDIM " +
                          "and DDIM trailing with --teacher-guidance at the same steps; DDIM at --teacher-steps)",
        };
        var teacherGuidance = new Option<double>("--teacher-guidance")
        {
            Description = "the teacher's CFG scale (default: the toy world's 3 with a recognizer, else 7.5)",
        };
        var teacherSteps = new Option<int>("--teacher-steps") { DefaultValueFactory = _ => 25 };
        var promptsFile = new Option<FileInfo?>("--prompts-file") { Description = "prompts (.txt one a line, .json, .jsonl, .csv)" };
        var split = new Option<string>("--split")
        {
            Description = "toy captions: heldout (never trained on) or seen", DefaultValueFactory = _ => "heldout",
        };
        var images = new Option<int>("--images") { Description = "toy prompts (one image each)", DefaultValueFactory = _ => 256 };
        var seed = new Option<long>("--seed")
        {
            Description = "noise seed of the first prompt; prompt i uses seed + i", DefaultValueFactory = _ => 1234,
        };
        var realImages = new Option<int>("--real-images")
        {
            Description = "real renders, the Fréchet reference", DefaultValueFactory = _ => 1024,
        };
        var size = new Option<int>("--size")
        {
            Description = "height and width (default: the toy world's 32 with a recognizer, else 512)",
        };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 64 };
        var recognizer = new Option<DirectoryInfo?>("--recognizer")
        {
            Description = "the toy judge's folder (default: the committed recognizer, for toy models)",
        };
        var breakdown = new Option<bool>("--breakdown")
        {
            Description = "per-attribute rows: requested objects found, shape, colour, size",
        };
        var output = new Option<DirectoryInfo>("--out") { Description = "results.md, results.json and grids", Required = true };
        var run = new Option<string?>("--run") { Description = "store the rows with this run (id or name), under its evaluate stage" };
        var devices = new DeviceOptions();
        var command = RunsCommand.WithStore("evaluate",
            "evaluate a model with LoRAs at chosen steps and samplers on held-out prompts: a table with 95 % intervals, grids and rows",
            model, tokenizer, loras, runLoras, name, steps, samplers, guidance, tcdEta, controls, teacherGuidance, teacherSteps,
            promptsFile, split, images, seed, realImages, size, batch, recognizer, breakdown, output, run);
        devices.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var watch = Stopwatch.StartNew();
            var store = RunStore.From(parse);
            var (device, dtype) = devices.Resolve(parse);
            var (modelId, modelPath) = ImageModels.Resolve(parse.GetValue(model)!);
            bool toy = modelId == ImageModels.ToyId;
            var stepCounts = Ints(parse.GetValue(steps)!, "--steps");
            var specs = (parse.GetValue(loras) ?? []).Select(JobsCommand.Lora)
                .Concat((parse.GetValue(runLoras) ?? []).Select(JobsCommand.RunLora)).ToList();
            await using var db = specs.Any(l => l.Run is not null) || parse.GetValue(run) is not null ? await store.OpenAsync() : null;
            var resolved = new List<JobLora>();
            for (int i = 0; i < specs.Count; i++)
                resolved.Add(specs[i].Run is null ? specs[i] : await RunLoras.ResolveAsync(specs[i], $"--run-lora #{i + 1}", db!,
                    new FileSystemArtifactStore(store.Options([]).ArtifactRoot), ct));
            var targetStage = parse.GetValue(run) is { } runRef ? await EvaluateStageAsync(db!, runRef, ct) : null;

            // a model judged by a toy recognizer is of the toy world: its CFG and image size
            var judgeDir = parse.GetValue(recognizer)?.FullName ?? (toy ? ToyWorld.PretrainedRecognizerDir : null);
            double teacherCfg = parse.GetResult(teacherGuidance) is null ? judgeDir is null ? 7.5 : 3.0 : parse.GetValue(teacherGuidance);
            var cfgs = parse.GetValue(guidance) is { } g ? Doubles(g, "--guidance") : [resolved.Count > 0 ? 1.0 : teacherCfg];
            var samplerNames = parse.GetValue(samplers) is { Length: > 0 } given ? given
                : resolved.Count > 0 ? ["ddim-trailing", "tcd"] : ["ddim", "ddim-trailing"];
            var evaluated = cfgs.SelectMany(cfg => samplerNames.Select(s => Sampler(s, parse.GetValue(tcdEta), cfg))).ToList();
            var promptSet = PromptsOf(parse.GetValue(promptsFile), parse.GetValue(split)!, parse.GetValue(images), store);

            using var pipeline = ImageModels.Open(modelPath, parse.GetValue(tokenizer), device, dtype);
            using var judge = judgeDir is null ? null : ToyRecognizer.FromPretrained(judgeDir, device);
            // a toy model is also judged by the recognizer no reward used (adherence-judge, fd-judge and kid-judge rows)
            using var independent = toy ? ToyRecognizer.FromPretrained(ToyWorld.PretrainedJudgeDir, device) : null;
            int px = parse.GetResult(size) is null ? judge is null ? 512 : ToyShapes.Resolution : parse.GetValue(size);
            var options = new EvaluationOptions
            {
                Steps = stepCounts, Height = px, Width = px, Seed = parse.GetValue(seed), BatchSize = parse.GetValue(batch),
            };
            var outDir = parse.GetValue(output)!.FullName;
            using var evaluation = new ModelEvaluation(pipeline, judge, promptSet, options, parse.GetValue(realImages), outDir,
                parse.GetValue(breakdown), judge: independent)
            {
                Evaluated = (m, s) => Console.Error.WriteLine($"{watch.Elapsed.TotalSeconds,7:F1} s  {m} {s}"),
            };
            Console.Error.WriteLine($"{modelPath}: {promptSet.Description}, steps {string.Join(",", stepCounts)}");

            if (resolved.Count > 0 && parse.GetValue(controls))
            {
                var teacherSamplers = SamplerSpec.Teacher(teacherCfg);
                evaluation.Evaluate("teacher", teacherSamplers);
                evaluation.Evaluate("teacher", [teacherSamplers[0]], [parse.GetValue(teacherSteps)], grid: false);
                evaluation.EvaluateUntrained(evaluated);
            }
            foreach (var lora in resolved)
                pipeline.LoadLora(lora.Path!, lora.Scale, lora.Id);
            var modelName = parse.GetValue(name) ?? (resolved.Count == 0 ? "teacher"
                : string.Join("+", resolved.Select(l => l.Id ?? Path.GetFileNameWithoutExtension(l.Path!))));
            if (promptSet.Split == ToyCaptionSplit.Train) modelName += " (seen)";
            evaluation.Evaluate(modelName, evaluated);
            pipeline.UnloadLoras();

            var (md, json) = evaluation.WriteReport($"hypersd evaluate {modelId}",
                "Not measured: FD and prompt adherence need a toy recognizer (--recognizer).");
            Console.WriteLine(File.ReadAllText(md));
            if (targetStage is not null)
                Console.WriteLine($"{await StoreAsync(db!, targetStage, evaluation.Rows, ct)} rows stored with run {targetStage.RunId}");
            Console.WriteLine($"{md}\n{json}\n{watch.Elapsed.TotalSeconds:F1} s");
        });
        return command;
    }

    static PromptSet PromptsOf(FileInfo? file, string split, int count, RunStore store)
    {
        if (file is not null)
            return PromptSet.File(file.Name, PromptFiles.Read(file.FullName, store.Options([]).Inputs).Select(r => r.Prompt).ToList());
        if (count <= 0) throw new ArgumentException($"--images: expected a positive count, got {count}");
        return PromptSet.Toy(count, split switch
        {
            "heldout" => ToyCaptionSplit.HeldOut,
            "seen" => ToyCaptionSplit.Train,
            _ => throw new ArgumentException($"--split '{split}': expected heldout or seen"),
        });
    }

    static SamplerSpec Sampler(string name, double eta, double cfg) => name switch
    {
        "ddim" => SamplerSpec.Ddim(cfg),
        "ddim-trailing" => SamplerSpec.DdimTrailing(cfg),
        "tcd" => SamplerSpec.Tcd(eta, cfg),
        _ => throw new ArgumentException($"--sampler '{name}': expected ddim, ddim-trailing or tcd"),
    };

    static IReadOnlyList<int> Ints(string list, string option) => list.Split(',').Select(s =>
        int.TryParse(s, CultureInfo.InvariantCulture, out var n) && n is >= 1 and <= 1000 ? n
            : throw new ArgumentException($"{option} '{list}': '{s}' is not a step count from 1 to 1000")).ToList();

    static IReadOnlyList<double> Doubles(string list, string option) => list.Split(',').Select(s =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var x) && x >= 0 ? x
            : throw new ArgumentException($"{option} '{list}': '{s}' is not a non-negative number")).ToList();

    /// <summary>The run's evaluate-model stage, whose rows these join.</summary>
    static async Task<Stage> EvaluateStageAsync(MetadataDbContext db, string reference, CancellationToken ct)
    {
        var runs = db.Runs.AsNoTracking().Include(r => r.Stages);
        var found = Guid.TryParse(reference, out var id) ? await runs.SingleOrDefaultAsync(r => r.Id == id, ct)
            : await runs.Where(r => r.Name == reference).OrderByDescending(r => r.CreatedAt).FirstOrDefaultAsync(ct);
        if (found is null) throw new ArgumentException($"--run: no run '{reference}' in the store");
        return found.Stages.FirstOrDefault(s => s.Kind == EvaluateModelStage.Kind)
               ?? throw new ArgumentException($"--run: run '{found.Name}' has no {EvaluateModelStage.Kind} stage to store rows under");
    }

    /// <summary>Stores the rows under the stage; a row of the same model, sampler, steps and metric is replaced.</summary>
    static async Task<int> StoreAsync(MetadataDbContext db, Stage stage, IReadOnlyList<EvaluationRow> rows, CancellationToken ct)
    {
        var existing = await db.Evaluations.Where(v => v.RunId == stage.RunId).ToListAsync(ct);
        foreach (var r in rows)
        {
            var row = existing.FirstOrDefault(v => (v.Model, v.Sampler, v.Steps, v.Metric) == (r.Model, r.Sampler, r.Steps, r.Metric));
            if (row is null)
            {
                row = new Evaluation { Id = Guid.NewGuid(), RunId = stage.RunId, Model = r.Model, Sampler = r.Sampler, Metric = r.Metric };
                db.Evaluations.Add(row);
            }
            (row.StageId, row.Steps, row.Value, row.Low, row.High, row.CreatedAt) =
                (stage.Id, r.Steps, r.Value, r.Low, r.High, DateTimeOffset.UtcNow);
        }
        await db.SaveChangesAsync(ct);
        return rows.Count;
    }
}
