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
        var command = new Command("toy", "toy-world models: the teacher and the recognizer");
        command.Subcommands.Add(Teacher());
        command.Subcommands.Add(Recognizer());
        command.Subcommands.Add(Distill());
        return command;
    }

    static Command Teacher()
    {
        var output = new Option<DirectoryInfo>("--out") { DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/teacher") };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 4000 };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 64 };
        var dataset = new Option<int>("--dataset") { Description = "training images", DefaultValueFactory = _ => 20000 };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 0 };
        var command = new Command("teacher", "train the toy teacher from scratch (a diffusers pipeline folder)") { output, steps, batch, dataset, seed };
        command.SetAction(parse =>
        {
            var watch = Stopwatch.StartNew();
            using var data = ToyWorld.CreateDataset(parse.GetValue(dataset), (int)parse.GetValue(seed), ToyVocabulary.CreateTokenizer(),
                new HyperSd.Diffusion.Models.Autoencoders.PixelUnshuffleAutoencoder(ToyWorld.AutoencoderConfig));
            Console.WriteLine($"dataset: {data.Count} images in {watch.Elapsed.TotalSeconds:F1} s");
            var options = new TeacherPretrainingOptions { Steps = parse.GetValue(steps), BatchSize = parse.GetValue(batch), Seed = parse.GetValue(seed) };
            using var teacher = ToyWorld.TrainTeacher(parse.GetValue(output)!.FullName, data, options, p => Console.WriteLine(p));
            Console.WriteLine($"teacher written to {parse.GetValue(output)!.FullName} in {watch.Elapsed.TotalSeconds:F1} s");
        });
        return command;
    }

    static Command Distill()
    {
        var teacher = new Option<DirectoryInfo>("--teacher") { DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/teacher") };
        var recognizer = new Option<DirectoryInfo>("--recognizer") { DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/recognizer") };
        var work = new Option<DirectoryInfo>("--out") { DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/distill") };
        var stageSteps = new Option<int>("--stage-steps") { DefaultValueFactory = _ => new ToyDistillationOptions().StageSteps };
        var trajectories = new Option<int>("--trajectories") { DefaultValueFactory = _ => new ToyDistillationOptions().TrajectoryCount };
        var variants = new Option<string[]>("--variant") { Description = "which variants (by index 0..2; default all)" };
        var command = new Command("distill", "toy distillation: trajectories, each variant's training, evaluation and the results table")
        {
            teacher, recognizer, work, stageSteps, trajectories, variants
        };
        command.SetAction(parse =>
        {
            var watch = Stopwatch.StartNew();
            using var pipeline = HyperSd.Diffusion.Pipelines.StableDiffusionPipeline.FromPretrained(parse.GetValue(teacher)!.FullName);
            using var model = ToyRecognizer.FromPretrained(parse.GetValue(recognizer)!.FullName);
            var options = new ToyDistillationOptions { StageSteps = parse.GetValue(stageSteps), TrajectoryCount = parse.GetValue(trajectories) };
            var chosen = parse.GetValue(variants) is { Length: > 0 } picked
                ? picked.Select(i => options.Variants[int.Parse(i, System.Globalization.CultureInfo.InvariantCulture)]).ToList()
                : options.Variants;
            var report = ToyDistillation.Run(pipeline, model, parse.GetValue(work)!.FullName, options, chosen, Console.WriteLine);
            var table = report.ToMarkdown();
            Console.WriteLine();
            Console.WriteLine(table);
            File.WriteAllText(Path.Combine(parse.GetValue(work)!.FullName, "results.md"), table);
            Console.WriteLine($"total {watch.Elapsed.TotalSeconds:F1} s");
        });
        return command;
    }

    static Command Recognizer()
    {
        var output = new Option<DirectoryInfo>("--out") { DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/recognizer") };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 300 };
        var command = new Command("recognizer", "train the toy recognizer (features for toy-FID, prompt adherence)") { output, steps };
        command.SetAction(parse =>
        {
            var watch = Stopwatch.StartNew();
            using var model = ToyRecognizerTrainer.Train(new ToyRecognizerTrainingOptions { Steps = parse.GetValue(steps) });
            var (images, scenes) = ToyShapes.Generate(1000, 99_000_001);
            Console.WriteLine($"accuracy on 1000 held-out images: {ToyRecognizerTrainer.Evaluate(model, images, scenes)} ({watch.Elapsed.TotalSeconds:F1} s)");
            model.SavePretrained(parse.GetValue(output)!.FullName);
        });
        return command;
    }
}
