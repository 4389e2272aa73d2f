using System.Text.Json;
using HyperSd.Data.Entities;
using HyperSd.Distillation.Toy;
using HyperSd.Services.Hosting;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace HyperSd.Services.Tests;

/// <summary>
/// What distillation must achieve, measured on the toy world with the committed teacher and recognizer at a tiny budget
/// (40 steps per stage, 2,048 trajectories, 128 prompts) with fixed seeds, each variant a run of <c>hypersd toy distill</c>'s
/// recipes through the embedded services. Measured (docs/results.md): the students' toy-FID at 2/4 steps is 686–917 /
/// 594–779 against the teacher's 3,399 / 1,400 with its own (plain, leading-spacing) DDIM, i.e. at most 0.27× and 0.56×.
/// The first stage's loss (mean of its first and last 10 % of steps) ends at 0.85× of its start for the baseline and
/// 0.951× for both TSCD variants (their k = 8 stage is the same); the numbers are identical run to run and machine to
/// machine (one tensor thread per stage, seeded generators).
/// </summary>
[Trait("Category", "Slow")]
[Collection(nameof(TorchGlobalState))] // no other tensor work beside it in this assembly
public class ToyExperimentOutcomeTests(ToyExperimentOutcomeTests.Experiment experiment, ITestOutputHelper output)
    : IClassFixture<ToyExperimentOutcomeTests.Experiment>
{
    const string Baseline = "toy-cd-k1";
    static readonly string[] Tscd = ["toy-tscd-mse", "toy-tscd-adv"];
    const string Sampler = "ddim-trailing";

    /// <summary>The three variants trained and evaluated once for all the assertions.</summary>
    public sealed class Experiment : IDisposable
    {
        readonly TestStore store = new();
        readonly Lazy<(IReadOnlyList<Run> Runs, IReadOnlyList<Evaluation> Rows, string Table)> result;
        public IReadOnlyList<Run> Runs => result.Value.Runs;
        public IReadOnlyList<Evaluation> Rows => result.Value.Rows;
        public string Table => result.Value.Table;

        /// <summary>Lazy, so that a skipped class costs nothing.</summary>
        public Experiment() => result = new(() => RunAsync().GetAwaiter().GetResult());

        async Task<(IReadOnlyList<Run>, IReadOnlyList<Evaluation>, string)> RunAsync()
        {
            var b = ToyExperiment.BaseRecipe();
            var adversarial = b with
            {
                Generation = null,
                Dataset = b.Dataset with { Count = 1024 },
                Trajectories = b.Trajectories with { Count = 2048 },
                Tscd = b.Tscd with { StepsPerStage = 40 },
                Evaluation = b.Evaluation with { Steps = [2, 4], Prompts = 128, RealImages = 512, TeacherSteps = 8 },
            };
            var options = store.WorkerOptions(o =>
            {
                o.Devices = ["cpu", "cpu"];
                o.TensorThreads = 1;
                o.HeartbeatInterval = TimeSpan.FromSeconds(1);
                o.ReconcileInterval = TimeSpan.FromSeconds(1);
            });
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.ClearProviders();
            builder.Services.AddHyperSdWorkers(options);
            using var host = builder.Build();
            await host.StartAsync();
            var runs = await ToyExperiment.RunAsync(host.Services,
                ToyExperiment.Plan(StageCatalogue.Default(), ToyExperiment.Variants(adversarial), options));
            await host.StopAsync();
            await using var db = store.CreateDbContext();
            var ids = runs.Select(r => r.Id).ToList();
            return (runs, await db.Evaluations.AsNoTracking().Where(v => ids.Contains(v.RunId)).ToListAsync(),
                await EvaluationTable.QueryAsync(db, ids) ?? "");
        }

        public void Dispose() => store.Dispose();
    }

    Run RunOf(string variant) => experiment.Runs.Single(r => r.Name == variant);

    double Value(string variant, string model, string sampler, int steps, string metric)
    {
        var run = RunOf(variant);
        Assert.True(run.State == RunState.Succeeded, $"{variant}: {run.State} {run.Error}");
        return experiment.Rows.Single(r => r.RunId == run.Id && r.Model == model && r.Sampler == sampler && r.Steps == steps && r.Metric == metric).Value;
    }

    /// <summary>The final LoRA (TSCD's last stage, k = 1) with DDIM trailing, or the teacher with its own DDIM and CFG.</summary>
    double Fd(string variant, string model, int steps) => Value(variant, model, model == "teacher" ? "ddim-cfg3" : Sampler, steps, "fd");

    /// <summary>Later stages start from a student already consistent over shorter segments and chase a moving target:
    /// at this budget TSCD (MSE)'s k = 4, 2 and 1 stages end above their start (the adversarial variant's fall), so the
    /// first stage carries the check.</summary>
    [Fact]
    public void Training_loss_falls_in_the_first_stage_of_every_variant()
    {
        output.WriteLine(experiment.Table);
        foreach (var run in experiment.Runs)
        {
            Assert.True(run.State == RunState.Succeeded, $"{run.Name}: {run.State} {run.Error}");
            var first = run.Stages.OrderBy(s => s.Index).First(s => s.Kind == "train-segment-stage");
            var detail = JsonDocument.Parse(first.ProgressDetail!).RootElement;
            double initial = detail.GetProperty("initial_loss").GetDouble(), final = detail.GetProperty("final_loss").GetDouble();
            output.WriteLine($"{run.Name} {first.Name}: {initial:G4} → {final:G4}");
            Assert.True(final < 0.98 * initial, $"{run.Name} {first.Name}: loss {initial:G4} → {final:G4}");
        }
    }

    [Theory]
    [InlineData(2, 0.5)]
    [InlineData(4, 0.75)]
    public void Every_distilled_model_beats_the_teacher_at_the_same_step_count(int steps, double ratio)
    {
        foreach (var variant in Tscd.Prepend(Baseline))
        {
            double student = Fd(variant, "tscd-k1", steps), teacher = Fd(variant, "teacher", steps);
            output.WriteLine($"{variant} @{steps}: toy-FID {student:F1} vs teacher {teacher:F1}");
            Assert.True(student < ratio * teacher, $"{variant} at {steps} steps: toy-FID {student:F1}, teacher {teacher:F1} (needs < {ratio}×)");
        }
    }

    /// <summary>TSCD as Hyper-SD ships it: stage k's LoRA samples k steps (its fixed-step LoRA). Measured here: at 4 steps
    /// 454 (MSE) and 472 (MSE + adv) against the baseline's 594, a lead of 21–24 %; at 100 steps per stage and seeds 0
    /// and 1, 345 and 384 against 419 and 458 (16–18 %). The final k = 1 LoRA sampled at 2 or 4 steps is not what TSCD
    /// makes for those steps: there the comparison is inside seed noise (docs/results.md).</summary>
    [Fact]
    public void Tscd_beats_the_one_segment_baseline_at_two_or_four_steps()
    {
        foreach (var variant in Tscd)
        {
            double best = new[] { 2, 4 }.Max(s => 1 - Fd(variant, $"tscd-k{s}", s) / Fd(Baseline, "tscd-k1", s));
            foreach (int s in new[] { 2, 4 })
                output.WriteLine($"{variant} @{s}: stage k={s} LoRA {Fd(variant, $"tscd-k{s}", s):F1}, final LoRA {Fd(variant, "tscd-k1", s):F1}, " +
                                 $"baseline {Fd(Baseline, "tscd-k1", s):F1}");
            Assert.True(best > 0.1, $"{variant} does not beat {Baseline} by 10 % at 2 or 4 steps (best lead {best:P1})");
        }
    }
}
