using System.CommandLine;
using System.Diagnostics;
using HyperSd.Distillation.Teacher;
using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

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
        var textEncoder = new Option<bool>("--train-text-encoder")
        {
            Description = "train the text encoder with the UNet (default: as the committed teacher)",
            DefaultValueFactory = _ => DefaultTeacher.TrainTextEncoder,
        };
        var attention = new Option<ToyTeacherArchitecture>("--unet")
        {
            Description = "UNet layout: TwoLevel (16/8, cross-attention at 8x8), CrossAttention16 (and at 16x16), ThreeLevel (16/8/4)",
            DefaultValueFactory = _ => DefaultArchitecture,
        };
        var captions = new Option<string>("--captions")
        {
            Description = "training captions: train (the train split) or all (the whole caption space, as the first teacher)",
            DefaultValueFactory = _ => DefaultCaptions,
        };
        captions.AcceptOnlyFromAmong("train", "all");
        var lr = new Option<double>("--lr") { DefaultValueFactory = _ => DefaultTeacher.LearningRate };
        var initFrom = new Option<DirectoryInfo?>("--init-from")
        {
            Description = "start from this teacher's UNet and text encoder (a fine-tune)",
        };
        var export = new Option<bool>("--export-checkpoint")
        {
            Description = "write the pipeline folder from the run's last checkpoint (<out>.checkpoint, EMA weights) instead of training",
        };
        var command = new Command("teacher", "train the toy teacher from scratch (a diffusers pipeline folder); an interrupted run resumes")
        {
            output, steps, batch, seed, textEncoder, attention, captions, lr, initFrom, export,
        };
        command.SetAction(parse => (parse.GetValue(export)
            ? ToyWorld.ExportTeacherCheckpoint(parse.GetValue(output)!.FullName.TrimEnd('/') + ".checkpoint",
                parse.GetValue(output)!.FullName,
                ToyWorld.TeacherUnet(parse.GetValue(attention)))
            : TrainTeacher(parse.GetValue(output)!.FullName,
            DefaultTeacher with
            {
                Steps = parse.GetValue(steps), BatchSize = parse.GetValue(batch), Seed = parse.GetValue(seed),
                TrainTextEncoder = parse.GetValue(textEncoder), LearningRate = parse.GetValue(lr),
            }, parse.GetValue(attention), parse.GetValue(captions) == "all" ? null : ToyCaptionSplit.Train,
                parse.GetValue(initFrom)?.FullName)).Dispose());
        return command;
    }

    static readonly TeacherPretrainingOptions DefaultTeacher = new() { Steps = 5000, BatchSize = 64 };
    const ToyTeacherArchitecture DefaultArchitecture = ToyTeacherArchitecture.TwoLevel;
    const string DefaultCaptions = "all";
    const int TeacherDatasetSize = 20000;

    static HyperSd.Diffusion.Pipelines.StableDiffusionPipeline TrainTeacher(string dir, TeacherPretrainingOptions options,
        ToyTeacherArchitecture architecture = DefaultArchitecture, ToyCaptionSplit? captions = null, string? initFrom = null)
    {
        var watch = Stopwatch.StartNew();
        // An interrupted run resumes from here exactly (the same command again).
        var checkpoint = dir.TrimEnd('/') + ".checkpoint";
        options = options with { CheckpointDir = checkpoint };
        using var data = ToyWorld.CreateDataset(TeacherDatasetSize, (int)options.Seed, ToyVocabulary.CreateTokenizer(),
            new HyperSd.Diffusion.Models.Autoencoders.PixelUnshuffleAutoencoder(ToyWorld.AutoencoderConfig), captions);
        var teacher = ToyWorld.TrainTeacher(dir, data, options, p => Console.WriteLine(p),
            unetConfig: ToyWorld.TeacherUnet(architecture), initFrom: initFrom);
        if (Directory.Exists(checkpoint)) Directory.Delete(checkpoint, true);
        Console.WriteLine($"teacher written to {dir} in {watch.Elapsed.TotalSeconds:F1} s " +
                          $"({Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds:F0} s of CPU; " +
                          "a resumed run counts from its resumption)");
        return teacher;
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

    static ToyRecognizer TrainRecognizer(string dir, int steps)
    {
        var watch = Stopwatch.StartNew();
        var model = ToyRecognizerTrainer.Train(new ToyRecognizerTrainingOptions { Steps = steps });
        var (images, scenes) = ToyShapes.Generate(1000, 99_000_001);
        using (images)
            Console.WriteLine($"recognizer accuracy on 1000 held-out images: {ToyRecognizerTrainer.Evaluate(model, images, scenes)} ({watch.Elapsed.TotalSeconds:F1} s)");
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
        var work = new Option<DirectoryInfo>("--out") { DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/distill") };
        var stageSteps = new Option<int>("--stage-steps") { DefaultValueFactory = _ => new ToyDistillationOptions().StageSteps };
        var trajectories = new Option<int>("--trajectories") { DefaultValueFactory = _ => new ToyDistillationOptions().TrajectoryCount };
        var parallel = new Option<int>("--parallel")
        {
            Description = "variants trained at once, one tensor thread each",
            DefaultValueFactory = _ => new ToyDistillationOptions().Parallelism,
        };
        var seed = new Option<long>("--seed") { Description = "seed of the trajectories and of every variant's training", DefaultValueFactory = _ => 0 };
        var variants = new Option<string[]>("--variant") { Description = "which variants by index (0 baseline, 1 tscd, 2 tscd+adv; default all; none: the teacher only)" };
        var command = new Command("distill", "toy distillation: trajectories, each variant's training, evaluation and the results table")
        {
            teacher, recognizer, work, stageSteps, trajectories, seed, variants, parallel
        };
        command.SetAction(parse =>
        {
            var watch = Stopwatch.StartNew();
            // The teacher and the recognizer are trained once and reused from their artifact folders.
            var teacherDir = parse.GetValue(teacher)!.FullName;
            var recognizerDir = parse.GetValue(recognizer)!.FullName;
            if (!Directory.Exists(teacherDir)) TrainTeacher(teacherDir, DefaultTeacher).Dispose();
            using var model = Directory.Exists(recognizerDir)
                ? ToyRecognizer.FromPretrained(recognizerDir) : TrainRecognizer(recognizerDir, new ToyRecognizerTrainingOptions().Steps);
            var options = new ToyDistillationOptions { StageSteps = parse.GetValue(stageSteps), TrajectoryCount = parse.GetValue(trajectories),
                Parallelism = parse.GetValue(parallel), Seed = parse.GetValue(seed) };
            var chosen = parse.GetValue(variants) is { Length: > 0 } picked
                ? picked.Where(i => i != "none").Select(i => options.Variants[int.Parse(i, System.Globalization.CultureInfo.InvariantCulture)]).ToList()
                : options.Variants;
            var report = ToyDistillation.Run(() => HyperSd.Diffusion.Pipelines.StableDiffusionPipeline.FromPretrained(teacherDir), model, parse.GetValue(work)!.FullName, options, chosen, Console.WriteLine);
            var table = report.ToMarkdown();
            Console.WriteLine();
            Console.WriteLine(table);
            var phases = report.PhasesMarkdown();
            Console.WriteLine(phases);
            File.WriteAllText(Path.Combine(parse.GetValue(work)!.FullName, "results.md"), table + "\n" + phases);
            Console.WriteLine($"total {watch.Elapsed.TotalSeconds:F1} s");
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
