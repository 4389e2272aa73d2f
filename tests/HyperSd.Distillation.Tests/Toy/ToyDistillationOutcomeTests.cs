using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Toy;
using Xunit.Abstractions;

namespace HyperSd.Distillation.Tests.Toy;

/// <summary>
/// What distillation must achieve, measured on the toy world with the committed teacher and recognizer at a tiny budget
/// (40 steps per stage, 2,048 trajectories, 128 prompts) with fixed seeds. Measured (docs/results.md): the students'
/// toy-FID at 2/4 steps is 686–917 / 594–779 against the teacher's 3,399 / 1,400 with its own (plain, leading-spacing)
/// DDIM, i.e. at most 0.27× and 0.56×. The first stage's loss (mean of its first and last 10 % of steps) ends at 0.85×
/// of its start for the baseline and 0.951× for both TSCD variants (their k = 8 stage is the same); the numbers are
/// identical run to run and machine to machine (one tensor thread per variant, seeded generators).
/// </summary>
[Trait("Category", "Slow")]
public class ToyDistillationOutcomeTests(ToyDistillationOutcomeTests.Experiment experiment, ITestOutputHelper output)
    : IClassFixture<ToyDistillationOutcomeTests.Experiment>
{
    const string Baseline = "cd-k1 (LCM-style baseline)";
    static readonly string[] Tscd = ["tscd 8-4-2-1 (mse)", "tscd 8-4-2-1 (mse+adv)"];
    const string Sampler = "ddim-trailing";

    /// <summary>The three variants trained and evaluated once for all the assertions.</summary>
    public sealed class Experiment : IDisposable
    {
        readonly string dir = Directory.CreateTempSubdirectory("toy-outcome-").FullName;
        readonly Lazy<ToyDistillationReport> report;
        public ToyDistillationReport Report => report.Value;

        /// <summary>Lazy, so that a skipped class costs nothing.</summary>
        public Experiment() => report = new(() =>
        {
            using var recognizer = ToyRecognizer.FromPretrained(ToyWorld.PretrainedRecognizerDir);
            var options = new ToyDistillationOptions
            {
                DatasetSize = 1024, TrajectoryCount = 2048, StageSteps = 40, EvaluationPrompts = 128, RealImages = 512,
                Steps = [2, 4], TeacherReferenceSteps = 8, Parallelism = 2,
            };
            return ToyDistillation.Run(() => StableDiffusionPipeline.FromPretrained(ToyWorld.PretrainedTeacherDir), recognizer, dir, options);
        });

        public void Dispose() => Directory.Delete(dir, true);
    }

    ToyDistillationReport Report => experiment.Report;
    double Fd(string model, int steps) => Report.Value(model, model == "teacher" ? "ddim-cfg3" : Sampler, steps, "fd");


    /// <summary>Later stages start from a student already consistent over shorter segments and chase a moving target:
    /// at this budget TSCD (MSE)'s k = 4, 2 and 1 stages end above their start (the adversarial variant's fall), so the
    /// first stage carries the check.</summary>
    [Fact]
    public void Training_loss_falls_in_the_first_stage_of_every_variant()
    {
        output.WriteLine(Report.ToMarkdown());
        foreach (var (variant, stages) in Report.Training)
            foreach (var stage in stages)
                output.WriteLine($"{variant} k={stage.Segments}: {stage.InitialLoss:G4} → {stage.FinalLoss:G4}");
        foreach (var (variant, stages) in Report.Training)
            Assert.True(stages[0].FinalLoss < 0.98 * stages[0].InitialLoss,
                $"{variant} k={stages[0].Segments}: loss {stages[0].InitialLoss:G4} → {stages[0].FinalLoss:G4}");
    }

    [Theory]
    [InlineData(2, 0.5)]
    [InlineData(4, 0.75)]
    public void Every_distilled_model_beats_the_teacher_at_the_same_step_count(int steps, double ratio)
    {
        foreach (var model in Tscd.Prepend(Baseline))
        {
            output.WriteLine($"{model} @{steps}: toy-FID {Fd(model, steps):F1} vs teacher {Fd("teacher", steps):F1}");
            Assert.True(Fd(model, steps) < ratio * Fd("teacher", steps),
                $"{model} at {steps} steps: toy-FID {Fd(model, steps):F1}, teacher {Fd("teacher", steps):F1} (needs < {ratio}×)");
        }
    }

    /// <summary>TSCD as Hyper-SD ships it: stage k's LoRA samples k steps (its fixed-step LoRA). Measured here: at 4 steps
    /// 454 (MSE) and 472 (MSE + adv) against the baseline's 594, a lead of 21–24 %; at 100 steps per stage and seeds 0
    /// and 1, 345 and 384 against 419 and 458 (16–18 %). The final k = 1 LoRA sampled at 2 or 4 steps is not what TSCD
    /// makes for those steps: there the comparison is inside seed noise (docs/results.md).</summary>
    [Fact]
    public void Tscd_beats_the_one_segment_baseline_at_two_or_four_steps()
    {
        foreach (var model in Tscd)
        {
            double best = new[] { 2, 4 }.Max(s => 1 - Fd(ToyDistillation.FixedStepName(model), s) / Fd(Baseline, s));
            foreach (int s in new[] { 2, 4 })
                output.WriteLine($"{model} @{s}: stage k={s} LoRA {Fd(ToyDistillation.FixedStepName(model), s):F1}, final LoRA {Fd(model, s):F1}, baseline {Fd(Baseline, s):F1}");
            Assert.True(best > 0.1, $"{model} does not beat {Baseline} by 10 % at 2 or 4 steps (best lead {best:P1})");
        }
    }
}
