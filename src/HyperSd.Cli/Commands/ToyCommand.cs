using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Teacher;
using HyperSd.Distillation.Rewards;
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
        command.Subcommands.Add(TextEncoder());
        command.Subcommands.Add(Distill());
        command.Subcommands.Add(ToyAblateCommand.Create());
        command.Subcommands.Add(Captions());
        command.Subcommands.Add(ToyAdherenceCommand.Create());
        return command;
    }

    static Command Teacher()
    {
        var output = new Option<DirectoryInfo>("--out") { DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/teacher") };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => DefaultTeacher.Steps };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => DefaultTeacher.BatchSize };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0 };
        var textEncoder = new Option<bool?>("--train-text-encoder")
        {
            Description = "train the text encoder with the UNet (default: frozen when --text-encoder gives a pretrained one, " +
                          "as SD keeps CLIP frozen; trained otherwise)",
        };
        var attention = new Option<ToyTeacherArchitecture>("--unet")
        {
            Description = "UNet layout: TwoLevel (16/8, cross-attention at 8x8), CrossAttention16 (and at 16x16), " +
                          "ThreeLevel (16/8/4)",
            DefaultValueFactory = _ => DefaultArchitecture,
        };
        var captions = new Option<string>("--captions")
        {
            Description = "training captions: train (the train split) or all (the whole caption space, as the first " +
                          "teacher)",
            DefaultValueFactory = _ => DefaultCaptions,
        };
        captions.AcceptOnlyFromAmong("train", "all");
        var lr = new Option<double>("--lr") { DefaultValueFactory = _ => DefaultTeacher.LearningRate };
        var initFrom = new Option<DirectoryInfo?>("--init-from")
        {
            Description = "start from this teacher's UNet and text encoder (a fine-tune)",
        };
        var textEncoderFrom = new Option<DirectoryInfo?>("--text-encoder")
        {
            Description = "start the text encoder from this folder (`hypersd toy text-encoder --out`), in place of --init-from's",
        };
        var export = new Option<bool>("--export-checkpoint")
        {
            Description = "write the pipeline folder from the run's last checkpoint (<out>.checkpoint, EMA weights) " +
                          "instead of training",
        };
        var command = new Command("teacher",
            "train the toy teacher from scratch (a diffusers pipeline folder); an interrupted run resumes")
        {
            output, steps, batch, seed, textEncoder, attention, captions, lr, initFrom, textEncoderFrom, export,
        };
        command.SetAction(parse => (parse.GetValue(export)
            ? ToyWorld.ExportTeacherCheckpoint(parse.GetValue(output)!.FullName.TrimEnd('/') + ".checkpoint",
                parse.GetValue(output)!.FullName,
                ToyWorld.TeacherUnet(parse.GetValue(attention)))
            : TrainTeacher(parse.GetValue(output)!.FullName,
            DefaultTeacher with
            {
                Steps = parse.GetValue(steps), BatchSize = parse.GetValue(batch), Seed = parse.GetValue(seed),
                TrainTextEncoder = parse.GetValue(textEncoder) ?? parse.GetValue(textEncoderFrom) is null,
                LearningRate = parse.GetValue(lr),
            }, parse.GetValue(attention), parse.GetValue(captions) == "all" ? null : ToyCaptionSplit.Train,
                parse.GetValue(initFrom)?.FullName, parse.GetValue(textEncoderFrom)?.FullName)).Dispose());
        return command;
    }

    /// <summary>The teacher's settings: three levels, the train split only, 3,500 steps at batch 64. The committed teacher is
    /// these on a text encoder pretrained to bind, frozen (`toy text-encoder --out TE`, then `toy teacher --text-encoder TE
    /// --seed 21`: 52 min at two threads; docs/results.md, "The toy teacher").</summary>
    static readonly TeacherPretrainingOptions DefaultTeacher = new() { Steps = 3500, BatchSize = 64 };
    const ToyTeacherArchitecture DefaultArchitecture = ToyTeacherArchitecture.ThreeLevel;
    const string DefaultCaptions = "train";
    const int TeacherDatasetSize = 20000;

    static HyperSd.Diffusion.Pipelines.StableDiffusionPipeline TrainTeacher(string dir, TeacherPretrainingOptions options,
        ToyTeacherArchitecture architecture = DefaultArchitecture, ToyCaptionSplit? captions = null, string? initFrom = null,
        string? textEncoderFrom = null)
    {
        var watch = Stopwatch.StartNew();
        // An interrupted run resumes from here exactly (the same command again).
        var checkpoint = dir.TrimEnd('/') + ".checkpoint";
        options = options with { CheckpointDir = checkpoint };
        using var data = ToyWorld.CreateDataset(TeacherDatasetSize, (int)options.Seed, ToyVocabulary.CreateTokenizer(),
            new HyperSd.Diffusion.Models.Autoencoders.PixelUnshuffleAutoencoder(ToyWorld.AutoencoderConfig), captions);
        var teacher = ToyWorld.TrainTeacher(dir, data, options, p => Console.WriteLine(p),
            unetConfig: ToyWorld.TeacherUnet(architecture), initFrom: initFrom, textEncoderFrom: textEncoderFrom);
        if (Directory.Exists(checkpoint)) Directory.Delete(checkpoint, true);
        Console.WriteLine($"teacher written to {dir} in {watch.Elapsed.TotalSeconds:F1} s " +
                          $"({Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds:F0} s of CPU; " +
                          "a resumed run counts from its resumption)");
        return teacher;
    }

    static Command TextEncoder()
    {
        var defaults = new ToyTextPretrainingOptions();
        var output = new Option<DirectoryInfo?>("--out")
        {
            Description = "write the pretrained text encoder here (config.json, model.safetensors)",
        };
        var probe = new Option<DirectoryInfo?>("--probe")
        {
            Description = "a teacher pipeline folder: train only a linear read-out on its frozen text encoder, to measure what it binds",
        };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => defaults.Steps };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => defaults.Seed };
        var command = new Command("text-encoder",
            "pretrain the toy text encoder to bind each object's attributes to its place (or probe a teacher's), and print " +
            "what a linear read-out finds at each object's last word on held-out captions")
        {
            output, probe, steps, seed,
        };
        command.SetAction(parse =>
        {
            var watch = Stopwatch.StartNew();
            var tokenizer = ToyVocabulary.CreateTokenizer();
            var probed = parse.GetValue(probe)?.FullName;
            if (probed is null && parse.GetValue(output) is null)
                throw new ArgumentException("toy text-encoder: give --out, or --probe TEACHER");
            TorchSharp.torch.manual_seed(parse.GetValue(seed));
            using var encoder = probed is null ? new CLIPTextModel(ToyVocabulary.TextConfig(tokenizer))
                : CLIPTextModel.FromPretrained(Path.Combine(probed, "text_encoder"));
            var options = defaults with { Steps = parse.GetValue(steps), Seed = parse.GetValue(seed), Probe = probed is not null };
            var accuracy = ToyTextEncoderPretraining.Train(encoder, tokenizer, options, (step, loss) =>
            {
                if (step % 250 == 0 || step == options.Steps) Console.WriteLine($"step {step}/{options.Steps} loss {loss:F4}");
            });
            Console.WriteLine($"{(probed is null ? "pretrained encoder" : $"probe of {probed}")}, held-out captions, read out at each " +
                              "object's last word:");
            foreach (var a in accuracy)
                Console.WriteLine(FormattableString.Invariant(
                    $"  {a.Objects} obj: cell {a.Cell:F3} shape {a.Shape:F3} colour {a.Color:F3} size {a.Size:F3} whole {a.Whole:F3}"));
            if (probed is null) encoder.SavePretrained(parse.GetValue(output)!.FullName);
            Console.WriteLine($"{watch.Elapsed.TotalSeconds:F1} s");
        });
        return command;
    }

    static Command Captions()
    {
        var split = new Option<string>("--split") { Description = "train or heldout", DefaultValueFactory = _ => "heldout" };
        split.AcceptOnlyFromAmong("train", "heldout");
        var command = new Command("captions", "print the toy caption split (ToyCaptions), one caption a line") { split };
        command.SetAction(parse =>
        {
            foreach (var caption in ToyCaptions.All(parse.GetValue(split) == "train" ? ToyCaptionSplit.Train : ToyCaptionSplit.HeldOut))
                Console.WriteLine(caption);
        });
        return command;
    }

    static ToyRecognizer TrainRecognizer(string dir, int steps, bool judge = false)
    {
        var watch = Stopwatch.StartNew();
        var model = judge ? ToyJudge.Train(ToyJudge.Options with { Steps = steps })
            : ToyRecognizerTrainer.Train(new ToyRecognizerTrainingOptions { Steps = steps });
        var (images, scenes) = ToyShapes.Generate(1000, 99_000_001);
        using (images)
            Console.WriteLine($"recognizer accuracy on 1000 held-out images: {ToyRecognizerTrainer.Evaluate(model, images, scenes)} " +
                              $"({watch.Elapsed.TotalSeconds:F1} s)");
        model.SavePretrained(dir);
        return model;
    }

    /// <summary>--teacher: a toy teacher's pipeline folder, the committed one by default.</summary>
    internal static Option<DirectoryInfo> TeacherOption(string description) => new("--teacher")
    {
        Description = description, DefaultValueFactory = _ => new DirectoryInfo(ToyWorld.PretrainedTeacherDir),
    };

    /// <summary>--recognizer: a toy recognizer's folder, the committed one by default.</summary>
    internal static Option<DirectoryInfo> RecognizerOption(string description) => new("--recognizer")
    {
        Description = description, DefaultValueFactory = _ => new DirectoryInfo(ToyWorld.PretrainedRecognizerDir),
    };

    static Command Distill()
    {
        var teacher = TeacherOption("teacher pipeline folder (default: the committed toy teacher; a missing folder is trained first)");
        var recognizer = RecognizerOption("recognizer folder (default: the committed one; a missing folder is trained first)");
        var work = new Option<DirectoryInfo>("--out")
        {
            Description = "the experiment's store (store/) and its results.md",
            DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/distill"),
        };
        var baseRecipe = ToyExperiment.Table(ToyExperiment.BaseRecipe());
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
            Description = "which variants by index (0 the k = 1 baseline, 1 the k = 4 control, 2 tscd, 3 tscd+adv; default all)"
        };
        var small = new Option<bool>("--small")
        {
            Description = "the outcome tests' budget (1,024 images, 2,048 trajectories, 40 steps per stage, 128 prompts at 2 and 4 " +
                          "steps); --stage-steps and --trajectories are ignored",
        };
        var command = new Command("distill",
            "toy distillation: each variant's recipe run through the services (dataset, trajectories, TSCD, evaluation), then one table")
        {
            teacher, recognizer, work, stageSteps, trajectories, seed, variants, parallel, small
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
            if (parse.GetValue(small)) adversarial = ToyExperiment.Small(baseRecipe) with { Seed = parse.GetValue(seed) };
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
        var judge = new Option<bool>("--judge")
        {
            Description = "train the independent judge instead (ToyJudge: another width and seed; the committed one is " +
                          "src/HyperSd.Distillation/Toy/Pretrained/judge)",
        };
        var command = new Command("recognizer", "train the toy recognizer (features for toy-FID, prompt adherence)")
        {
            output, steps, judge,
        };
        command.SetAction(parse =>
            TrainRecognizer(parse.GetValue(output)!.FullName, parse.GetValue(steps), parse.GetValue(judge)).Dispose());
        return command;
    }
}
