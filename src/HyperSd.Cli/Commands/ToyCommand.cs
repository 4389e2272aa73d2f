using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Distillation.Teacher;
using HyperSd.Distillation.Toy;
using HyperSd.Services.Hosting;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd toy …</c>: the toy world's one-off models (teacher, recognizer), cached as artifacts.</summary>
public static class ToyCommand
{
    public static Command Create()
    {
        var command = new Command("toy", "the toy world: teacher, recognizer, and the distillation experiment");
        command.Subcommands.Add(Teacher());
        command.Subcommands.Add(Recognizer());
        command.Subcommands.Add(Distill());
        return command;
    }

    static Command Teacher()
    {
        var output = new Option<DirectoryInfo>("--out") { DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/teacher") };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => DefaultTeacher.Steps };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => DefaultTeacher.BatchSize };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0 };
        var command = new Command("teacher", "train the toy teacher from scratch (a diffusers pipeline folder)")
        {
            output, steps, batch, seed
        };
        command.SetAction(parse => TrainTeacher(parse.GetValue(output)!.FullName,
            DefaultTeacher with
            {
                Steps = parse.GetValue(steps), BatchSize = parse.GetValue(batch), Seed = parse.GetValue(seed)
            }).Dispose());
        return command;
    }

    static readonly TeacherPretrainingOptions DefaultTeacher = new() { Steps = 5000, BatchSize = 64 };
    const int TeacherDatasetSize = 20000;

    static HyperSd.Diffusion.Pipelines.StableDiffusionPipeline TrainTeacher(string dir, TeacherPretrainingOptions options)
    {
        var watch = Stopwatch.StartNew();
        using var data = ToyWorld.CreateDataset(TeacherDatasetSize, (int)options.Seed, ToyVocabulary.CreateTokenizer(),
            new HyperSd.Diffusion.Models.Autoencoders.PixelUnshuffleAutoencoder(ToyWorld.AutoencoderConfig));
        var teacher = ToyWorld.TrainTeacher(dir, data, options, p => Console.WriteLine(p));
        Console.WriteLine($"teacher written to {dir} in {watch.Elapsed.TotalSeconds:F1} s");
        return teacher;
    }

    static ToyRecognizer TrainRecognizer(string dir, int steps)
    {
        var watch = Stopwatch.StartNew();
        var model = ToyRecognizerTrainer.Train(new ToyRecognizerTrainingOptions { Steps = steps });
        var (images, scenes) = ToyShapes.Generate(1000, 99_000_001);
        using (images)
            Console.WriteLine($"recognizer accuracy on 1000 held-out images: {ToyRecognizerTrainer.Evaluate(model, images, scenes)} " +
                              $"({watch.Elapsed.TotalSeconds:F1} s)");
        model.SavePretrained(dir);
        return model;
    }

    static Command Distill()
    {
        var teacher = new Option<DirectoryInfo>("--teacher")
        {
            Description = "teacher pipeline folder (default: the committed toy teacher; a missing folder is trained first)",
            DefaultValueFactory = _ => new DirectoryInfo(ToyWorld.PretrainedTeacherDir),
        };
        var recognizer = new Option<DirectoryInfo>("--recognizer")
        {
            Description = "recognizer folder (default: the committed one; a missing folder is trained first)",
            DefaultValueFactory = _ => new DirectoryInfo(ToyWorld.PretrainedRecognizerDir),
        };
        var work = new Option<DirectoryInfo>("--out")
        {
            Description = "the experiment's store (store/) and its results.md",
            DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/distill"),
        };
        var baseRecipe = ToyExperiment.BaseRecipe();
        var stageSteps = new Option<int>("--stage-steps") { DefaultValueFactory = _ => baseRecipe.Tscd.StepsPerStage };
        var trajectories = new Option<int>("--trajectories") { DefaultValueFactory = _ => baseRecipe.Trajectories.Count };
        var parallel = new Option<int>("--parallel")
        {
            Description = "stages run at once (one CPU slot and one tensor thread each)",
            DefaultValueFactory = _ => Math.Max(1, Environment.ProcessorCount),
        };
        var seed = new Option<long>("--seed")
        {
            Description = "seed of the trajectories and of every variant's training", DefaultValueFactory = _ => 0
        };
        var variants = new Option<int[]>("--variant")
        {
            Description = "which variants by index (0 baseline, 1 tscd, 2 tscd+adv; default all)"
        };
        var command = new Command("distill",
            "toy distillation: each variant's recipe run through the services (dataset, trajectories, TSCD, evaluation), then one table")
        {
            teacher, recognizer, work, stageSteps, trajectories, seed, variants, parallel
        };
        command.SetAction(async (parse, ct) =>
        {
            var watch = Stopwatch.StartNew();
            // The teacher and the recognizer are trained once and reused from their artifact folders.
            var teacherDir = parse.GetValue(teacher)!.FullName;
            var recognizerDir = parse.GetValue(recognizer)!.FullName;
            if (!Directory.Exists(teacherDir)) TrainTeacher(teacherDir, DefaultTeacher).Dispose();
            if (!Directory.Exists(recognizerDir)) TrainRecognizer(recognizerDir, new ToyRecognizerTrainingOptions().Steps).Dispose();
            var adversarial = baseRecipe with
            {
                Seed = parse.GetValue(seed), Generation = null,
                Trajectories = baseRecipe.Trajectories with { Count = parse.GetValue(trajectories) },
                Tscd = baseRecipe.Tscd with { StepsPerStage = parse.GetValue(stageSteps) },
            };
            var all = ToyExperiment.Variants(adversarial);
            var chosen = parse.GetValue(variants) is { Length: > 0 } picked ? picked.Select(i => all[i]).ToList() : all;
            var outDir = parse.GetValue(work)!.FullName;
            var store = new RunStore(Path.Combine(outDir, "store"), null, null);
            var planned = ToyExperiment.Plan(StageCatalogue.Default(), chosen, new WorkerOptions());
            int slots = parse.GetValue(parallel);
            using var host = store.StartHost(allRoles: true, parse.GetValue(RunCommand.VerboseOption), o =>
            {
                o.Devices = [.. Enumerable.Repeat("cpu", slots)];
                if (slots > 1) o.TensorThreads = 1; // one core per stage beats two threads contending per op
                o.ToyTeacherDir = teacherDir;
                o.ToyRecognizerDir = recognizerDir;
            });
            Console.WriteLine($"{planned.Count} runs ({string.Join(", ", chosen.Select(r => r.Name))}), " +
                              $"{slots} stages at a time: store {store.StoreDir}");
            var runs = await ToyExperiment.RunAsync(host.Services, planned, ct);
            await host.StopAsync(CancellationToken.None);
            var ids = runs.Select(r => r.Id).ToList();
            var dbs = host.Services.GetRequiredService<IDbContextFactory<MetadataDbContext>>();

            await using var db = await dbs.CreateDbContextAsync(CancellationToken.None);
            var table = await EvaluationTable.QueryAsync(db, ids) ?? "(no evaluation rows)\n";
            var times = new StringBuilder("| run | stage | wall time (s) |\n| --- | --- | ---: |\n");
            foreach (var run in runs)
                foreach (var s in run.Stages)
                    times.AppendLine(CultureInfo.InvariantCulture,
                        $"| {run.Name} | {s.Name} | {((s.FinishedAt - s.StartedAt)?.TotalSeconds ?? 0):F1} |");
            Console.WriteLine();
            Console.WriteLine(table);
            Console.WriteLine(times);
            foreach (var run in runs.Where(r => r.State != RunState.Succeeded))
                Console.Error.WriteLine($"hypersd: run {run.Name} ({run.Id}) {run.State.ToString().ToLowerInvariant()}: {run.Error}");
            await File.WriteAllTextAsync(Path.Combine(outDir, "results.md"), table + "\n" + times, CancellationToken.None);
            Console.WriteLine($"total {watch.Elapsed.TotalSeconds:F1} s");
            return runs.All(r => r.State == RunState.Succeeded) ? 0 : 1;
        });
        return command;
    }

    static Command Recognizer()
    {
        var output = new Option<DirectoryInfo>("--out") { DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/recognizer") };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => new ToyRecognizerTrainingOptions().Steps };
        var command = new Command("recognizer", "train the toy recognizer (features for toy-FID, prompt adherence)") { output, steps };
        command.SetAction(parse => TrainRecognizer(parse.GetValue(output)!.FullName, parse.GetValue(steps)).Dispose());
        return command;
    }
}
