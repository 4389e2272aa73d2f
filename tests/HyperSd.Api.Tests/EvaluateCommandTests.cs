using System.Text.Json;
using HyperSd.Data;
using HyperSd.Distillation.Toy;
using HyperSd.Testing;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Api.Tests;

/// <summary><c>hypersd evaluate</c> against a run's own evaluation: the same prompts, seeds and LoRA give the rows the
/// evaluate-model stage stored, since both measure through one class.</summary>
[Collection(nameof(ToyRunTests))]
public sealed class EvaluateCommandTests : IDisposable
{
    // under the working directory: the CLI's data and models roots (HyperSd__DataRoot, HyperSd__ModelsRoot) default to it
    readonly string dir = Directory.CreateDirectory(Path.Combine(Environment.CurrentDirectory, $"evaluate-{Guid.NewGuid():N}")).FullName;

    public void Dispose() => Directory.Delete(dir, true);

    sealed record Row(string Model, string Sampler, int Steps, string Metric, double Value, double? Low, double? High);
    sealed record Results(string Prompts, string? Split, IReadOnlyList<Row> Rows);

    [Fact]
    public async Task A_runs_lora_evaluated_on_its_prompts_and_seeds_gives_the_runs_stored_rows_and_stores_them_again()
    {
        var (teacher, _) = TinyToy.WriteModels(Path.Combine(dir, "models"));
        var recipe = Path.Combine(dir, "tiny.yaml");
        await File.WriteAllTextAsync(recipe, TinyToy.Recipe(teacher));
        var store = Path.Combine(dir, "store");
        CliRun.Succeeds(["run", recipe, "--store-dir", store]);

        var outDir = Path.Combine(dir, "eval");
        string[] args =
        [
            "evaluate", "--model", teacher, "--recognizer", ToyWorld.PretrainedRecognizerDir, "--run-lora", "tiny:2", "--name", "tscd-k2",
            "--steps", "2", "--sampler", "ddim-trailing", "--controls", "--teacher-steps", "3", "--images", "6", "--real-images", "16",
            "--batch-size", "6", "--store-dir", store, "--out", outDir, "--run", "tiny",
        ];
        CliRun.Succeeds(args);
        var results = JsonSerializer.Deserialize<Results>(await File.ReadAllTextAsync(Path.Combine(outDir, "results.json")),
            new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })!;
        Assert.Equal("heldout", results.Split);

        await using var db = await new Cli.Commands.RunStore(store, null, null).OpenAsync();
        var stored = await db.Evaluations.AsNoTracking().ToListAsync();
        // the fixed-step LoRA at its steps, the teacher (both samplers; DDIM at its reference steps), the untrained control
        var compared = 0;
        foreach (var row in results.Rows)
        {
            var match = stored.Single(v => (v.Model, v.Sampler, v.Steps, v.Metric) == (row.Model, row.Sampler, row.Steps, row.Metric));
            Assert.True(Math.Abs(match.Value - row.Value) <= 1e-9 * Math.Max(1, Math.Abs(row.Value)),
                $"{row.Model} {row.Sampler}@{row.Steps} {row.Metric}: evaluate gives {row.Value}, the run stored {match.Value}");
            Assert.Equal((match.Low is null, match.High is null), (row.Low is null, row.High is null));
            compared++;
        }
        // tscd-k2, untrained, teacher ×2 at 2 steps, teacher at 3: fd, kid, adherence each; and tscd-k2's adherence paired
        // with the untrained control's
        Assert.Equal(5 * 3 + 1, compared);
        Assert.Contains(results.Rows, r => r is { Model: "tscd-k2", Sampler: "ddim-trailing", Steps: 2, Metric: "adherence-gain" });
        Assert.Contains(results.Rows, r => r is { Model: "untrained", Sampler: "ddim-trailing", Steps: 2 });
        Assert.Contains(results.Rows, r => r is { Model: "teacher", Sampler: "ddim-cfg3", Steps: 3 });
        // --run stored them over the run's rows: no row was added
        Assert.Equal(stored.Count, stored.Select(v => (v.Model, v.Sampler, v.Steps, v.Metric)).Distinct().Count());
    }

    [Theory]
    [InlineData("--steps", "0", "--steps '0': '0' is not a step count")]
    [InlineData("--sampler", "euler", "--sampler 'euler': expected ddim, ddim-trailing or tcd")]
    [InlineData("--split", "train", "--split 'train': expected heldout or seen")]
    [InlineData("--run-lora", "nope", "no run 'nope' in the store")]
    public void Bad_options_are_refused_with_the_option_named(string option, string value, string message)
    {
        var (code, error) = CliRun.Run(
            ["evaluate", option, value, "--store-dir", Path.Combine(dir, "store"), "--out", Path.Combine(dir, "out")]);
        Assert.Equal(2, code);
        Assert.Contains(message, error);
    }
}
