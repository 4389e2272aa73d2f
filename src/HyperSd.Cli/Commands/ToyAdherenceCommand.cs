using System.CommandLine;
using System.Diagnostics;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Toy;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd toy adherence</c>: how well a toy teacher follows held-out and seen prompts, one and two objects.</summary>
public static class ToyAdherenceCommand
{
    public static Command Create()
    {
        var defaults = new ToyAdherenceOptions();
        var teacher = ToyCommand.TeacherOption("teacher pipeline folder (default: the committed toy teacher)");
        var recognizer = ToyCommand.RecognizerOption("recognizer folder, the judge (default: the committed one)");
        var prompts = new Option<int>("--prompts")
        {
            Description = "prompts per set (4 sets)", DefaultValueFactory = _ => defaults.Prompts,
        };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => defaults.Steps };
        var guidance = new Option<double>("--guidance")
        {
            Description = "CFG scale", DefaultValueFactory = _ => defaults.Sampler.GuidanceScale,
        };
        var trailing = new Option<bool>("--trailing") { Description = "DDIM with trailing spacing instead of the model's own (leading)" };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => defaults.Seed };
        var output = new Option<DirectoryInfo?>("--out") { Description = "write adherence.md and one image grid per set here" };
        var command = new Command("adherence",
            "strict prompt adherence of a toy teacher on held-out and seen captions, one and two objects (DDIM with CFG, as the evaluator)")
        {
            teacher, recognizer, prompts, steps, guidance, trailing, seed, output,
        };
        command.SetAction(parse =>
        {
            var watch = Stopwatch.StartNew();
            double cfg = parse.GetValue(guidance);
            var options = new ToyAdherenceOptions
            {
                Prompts = parse.GetValue(prompts), Steps = parse.GetValue(steps), Seed = parse.GetValue(seed),
                Sampler = parse.GetValue(trailing) ? SamplerSpec.DdimTrailing(cfg) : SamplerSpec.Ddim(cfg),
                GridDir = parse.GetValue(output)?.FullName,
            };
            var teacherDir = parse.GetValue(teacher)!.FullName;
            using var pipeline = StableDiffusionPipeline.FromPretrained(teacherDir);
            using var judge = ToyRecognizer.FromPretrained(parse.GetValue(recognizer)!.FullName);
            Console.WriteLine($"{teacherDir}: {options.Sampler.Name}, {options.Steps} steps, " +
                              $"{options.Prompts} prompts per set, seed {options.Seed}");
            var rows = ToyAdherence.Measure(pipeline, judge, options, Console.WriteLine);
            var table = ToyAdherence.ToMarkdown(rows);
            Console.WriteLine();
            Console.WriteLine(table);
            if (options.GridDir is not null)
                File.WriteAllText(Path.Combine(options.GridDir, "adherence.md"),
                    $"teacher {teacherDir}, {options.Sampler.Name}, {options.Steps} steps, seed {options.Seed}\n\n{table}");
            Console.WriteLine($"{watch.Elapsed.TotalSeconds:F1} s");
        });
        return command;
    }
}
