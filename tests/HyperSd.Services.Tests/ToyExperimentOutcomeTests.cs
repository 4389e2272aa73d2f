using System.Text.Json;
using HyperSd.Data.Entities;
using HyperSd.Distillation.Toy;
using HyperSd.Services.Evaluator;
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
/// What distillation must achieve, measured on the toy world with the committed teacher (three levels, train captions
/// only) and recognizer at a tiny budget (40 steps per stage, 2,048 trajectories, 128 held-out prompts) with fixed seeds:
/// the k = 1 baseline and TSCD with the adversarial term (recipes/toy.yaml), each a run of <c>hypersd toy distill</c>'s
/// recipes through the embedded services (the k = 4 control and TSCD without the adversarial term are measured by
/// <c>hypersd toy distill</c>, docs/results.md). Read against the controls every evaluation now has: the untrained student
/// (the LoRA at zero: the teacher without CFG, DDIM trailing) scores toy-FID 588 / 528 at 2 / 4 steps, the teacher on its
/// best sampler (DDIM trailing, CFG 3) 233 / 205. Measured (the teacher since 2026-12-04 evening; docs/results.md): TSCD's
/// fixed-step LoRAs (stage k at k steps) 391 / 338, the unified LoRA 322 / 359, the baseline 607 / 617 — at this budget
/// the baseline's k = 1 LoRA sampled at 2 or 4 steps is worse than the untrained control, TSCD's final k = 1 LoRA
/// (426 / 415) better. The numbers are identical run to run and machine to machine (one
/// tensor thread per stage, seeded generators).
/// </summary>
[Trait("Category", "Slow")]
[Collection(nameof(TorchGlobalState))] // no other tensor work beside it in this assembly
public class ToyExperimentOutcomeTests(ToyExperimentOutcomeTests.Experiment experiment, ITestOutputHelper output)
    : IClassFixture<ToyExperimentOutcomeTests.Experiment>
{
    const string Baseline = "toy-cd-k1", Tscd = "toy-tscd-adv";
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
            var adversarial = ToyExperiment.Small(ToyExperiment.BaseRecipe());
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
            // two runs, one per device slot: the CI's budget
            var variants = ToyExperiment.Variants(adversarial).Where(r => r.Name is Baseline or Tscd).ToList();
            var runs = await ToyExperiment.RunAsync(host.Services, ToyExperiment.Plan(StageCatalogue.Default(), variants, options));
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

    /// <summary>A student's LoRA with DDIM trailing, or the teacher with its own DDIM and CFG.</summary>
    double Fd(string variant, string model, int steps) => Value(variant, model, model == "teacher" ? "ddim-cfg3" : Sampler, steps, "fd");

    /// <summary>Later stages start from a student already consistent over shorter segments and chase a moving target, so
    /// the first stage carries the check (measured with the base teacher: 0.0168 → 0.0145 for the baseline, 0.00165 → 0.00140 at k = 8).</summary>
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

    /// <summary>TSCD's fixed-step LoRAs (stage k at k steps, as Hyper-SD ships them) and the unified LoRA beat the
    /// untrained student by 15 % (measured: 0.66 / 0.64 and 0.55 / 0.68 of it at 2 / 4 steps), and the fixed-step LoRAs come
    /// within 2.1× of the teacher on its best sampler (measured 1.68× / 1.65×), a bar the untrained control fails (2.53× /
    /// 2.58×). An untrained or broken LoRA is the control, so it fails both. Seed 0's numbers: on seed 1, with the base
    /// teacher (<c>hypersd toy distill --small --seed 1</c>, docs/results.md), the 4-step LoRA and the unified LoRA passed
    /// too, but TSCD + adv's 2-step LoRA missed both bars (0.87× the untrained student, 2.16× the teacher).</summary>
    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void Tscd_loras_beat_the_untrained_student_and_come_near_the_teacher_on_its_best_sampler(int steps)
    {
        output.WriteLine(experiment.Table);
        double fixedStep = Fd(Tscd, $"tscd-k{steps}", steps), unified = Fd(Tscd, "unified", steps);
        double untrained = Untrained(Tscd, steps), teacher = TeacherBest(Tscd, steps);
        output.WriteLine($"@{steps}: stage k={steps} LoRA {fixedStep:F1}, unified {unified:F1}, untrained {untrained:F1}, " +
                         $"teacher best {teacher:F1}, baseline {Fd(Baseline, "tscd-k1", steps):F1}");
        Assert.True(fixedStep < UntrainedRatio * untrained, $"stage k={steps} LoRA {fixedStep:F1}, untrained {untrained:F1}");
        Assert.True(unified < UntrainedRatio * untrained, $"unified LoRA {unified:F1}, untrained {untrained:F1}");
        Assert.True(fixedStep < TeacherRatio * teacher, $"stage k={steps} LoRA {fixedStep:F1}, teacher on its best sampler {teacher:F1}");
        Assert.False(untrained < TeacherRatio * teacher, $"the untrained control {untrained:F1} passes the teacher bar ({teacher:F1})");
    }

    const double UntrainedRatio = 0.85, TeacherRatio = 2.1;

    /// <summary>The teacher at the same step count on its best sampler (DDIM or DDIM trailing, both with CFG).</summary>
    double TeacherBest(string variant, int steps) =>
        Math.Min(Value(variant, "teacher", "ddim-cfg3", steps, "fd"), Value(variant, "teacher", "ddim-trailing-cfg3", steps, "fd"));

    /// <summary>The untrained student: the LoRA at zero, i.e. the teacher without CFG on DDIM trailing.</summary>
    double Untrained(string variant, int steps) => Fd(variant, ModelEvaluation.Untrained, steps);

    /// <summary>TSCD against the one-segment baseline at the same budget: stage k's LoRA at k steps against the baseline's
    /// k = 1 LoRA (measured: 391 against 607 at 2 steps, 338 against 617 at 4, leads of 36 % and 45 %). TSCD's own final
    /// k = 1 LoRA at 2 / 4 steps (426 / 415) is printed, not asserted: it is a one-segment model off its design point.</summary>
    [Fact]
    public void Tscd_fixed_step_loras_beat_the_one_segment_baseline_at_two_and_four_steps()
    {
        foreach (int s in new[] { 2, 4 })
        {
            double tscd = Fd(Tscd, $"tscd-k{s}", s), baseline = Fd(Baseline, "tscd-k1", s);
            output.WriteLine($"@{s}: stage k={s} LoRA {tscd:F1}, final {Fd(Tscd, "tscd-k1", s):F1}, {Baseline} {baseline:F1}");
            Assert.True(tscd < 0.8 * baseline, $"at {s} steps TSCD's stage k={s} LoRA {tscd:F1} does not beat {Baseline} {baseline:F1} by 20 %");
        }
    }
}
