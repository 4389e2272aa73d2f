using System.CommandLine;
using System.Diagnostics;
using HyperSd.Distillation.Toy;
using HyperSd.Services.Runs;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd toy ablate</c>: TSCD's adversarial step with PCM's settings, each flipped back one at a time
/// (<see cref="ToyAblation"/>), at the outcome tests' budget (recipes/toy.yaml, <see cref="ToyExperiment.Small"/>).</summary>
public static class ToyAblateCommand
{
    public static Command Create()
    {
        var teacher = ToyCommand.TeacherOption("teacher pipeline folder (default: the committed toy teacher)");
        var recognizer = ToyCommand.RecognizerOption(
            "recognizer folder, the FD's features (default: the committed one; the judge is always the committed judge)");
        var output = new Option<DirectoryInfo>("--out")
        {
            Description = "pools, stages (a rerun resumes them), grids and results.md",
            DefaultValueFactory = _ => new DirectoryInfo("artifacts/toy/ablate"),
        };
        var redraws = new Option<int>("--redraws")
        {
            Description = "independent re-draws of the held-out prompts, noise and real reference (the FD intervals rest on them)",
            DefaultValueFactory = _ => 5,
        };
        var parallel = new Option<int>("--parallel")
        {
            Description = "variants trained at once (one tensor thread each)",
            DefaultValueFactory = _ => Math.Max(1, Environment.ProcessorCount),
        };
        var seed = new Option<long>("--seed") { Description = "seed of the trajectories and of every stage", DefaultValueFactory = _ => 0 };
        var variants = new Option<string[]>("--variant")
        {
            Description = "variants by name (the first is the reference of the paired differences; default: all, pcm first)",
        };
        var command = new Command("ablate",
            "TSCD's adversarial step: PCM's settings and each flipped back, at the outcome tests' budget; FD and judge adherence")
        {
            teacher, recognizer, output, redraws, parallel, seed, variants,
        };
        command.SetAction((parse, ct) =>
        {
            var watch = Stopwatch.StartNew();
            var all = ToyAblation.Variants(ToyExperiment.Small(ToyExperiment.BaseRecipe()) with { Seed = parse.GetValue(seed) });
            var chosen = parse.GetValue(variants) is { Length: > 0 } names
                ? names.Select(n => all.SingleOrDefault(v => v.Name == n) ?? throw new ArgumentException(
                    $"--variant: unknown variant '{n}' (allowed: {string.Join(", ", all.Select(v => v.Name))})")).ToList()
                : all;
            var options = new ToyAblation.Options(parse.GetValue(output)!.FullName, parse.GetValue(teacher)!.FullName,
                parse.GetValue(recognizer)!.FullName, parse.GetValue(redraws), parse.GetValue(parallel));
            Console.WriteLine($"{chosen.Count} variants ({string.Join(", ", chosen.Select(v => v.Name))}), {options.Parallel} at a time, " +
                              $"{options.Redraws} re-draws: {options.OutDir}");
            var table = ToyAblation.Run(chosen, options,
                line => Console.WriteLine($"[{watch.Elapsed.TotalSeconds,6:F0} s] {line}"), ct);
            Console.WriteLine();
            Console.WriteLine(table);
            Console.WriteLine($"total {watch.Elapsed.TotalSeconds:F0} s");
            return Task.FromResult(0);
        });
        return command;
    }
}
