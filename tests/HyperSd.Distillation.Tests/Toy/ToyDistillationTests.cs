using HyperSd.Distillation.Tests.Evaluation;
using HyperSd.Distillation.Toy;

namespace HyperSd.Distillation.Tests.Toy;

[Collection(GlobalRngCollection.Name)]
public class ToyDistillationTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("toy-distill-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    [Fact]
    public void The_experiment_runs_end_to_end_and_tabulates_every_model_and_step_count()
    {
        using var recognizer = new ToyRecognizer(new ToyRecognizerConfig());
        var options = new ToyDistillationOptions
        {
            DatasetSize = 64, TrajectoryCount = 32, StageSteps = 2, BatchSize = 4, LoraRank = 2, EvaluationPrompts = 8, RealImages = 64,
            Steps = [1, 2], TeacherReferenceSteps = 3,
        };
        var variants = new[] { options.Variants[0], options.Variants[2] with { Config = options.Variants[2].Config with { Stages = [2, 1] } } };
        var report = ToyDistillation.Run(() => TinyToyPipeline.Create(), recognizer, dir, options, variants);

        // teacher: 2 samplers × 2 step counts + the reference; each variant: 2 samplers × 2 step counts; the two-stage
        // variant's fixed-step LoRAs: k = 2 at 2 steps, k = 1 at 1; two metrics each.
        Assert.Equal(2 * (5 + 2 * 2 * 2 + 2), report.Rows.Count);
        var fixedStep = ToyDistillation.FixedStepName("tscd 8-4-2-1 (mse+adv)");
        Assert.Equal([(1, "adherence"), (1, "fd"), (2, "adherence"), (2, "fd")],
            report.Rows.Where(r => r.Model == fixedStep).Select(r => (r.Steps, r.Metric)).Order());
        Assert.All(report.Rows, r => Assert.True(double.IsFinite(r.Value), r.ToString()));
        var table = report.ToMarkdown();
        Assert.Contains("| teacher | ddim-cfg3 |", table);
        Assert.Contains("| teacher | ddim-trailing-cfg3 |", table);
        Assert.Contains("| cd-k1 (LCM-style baseline) | tcd-eta0.3 |", table);
        Assert.Contains(report.Phases, p => p.Phase == "train tscd 8-4-2-1 (mse+adv)" && p.Detail.Contains("k=2") && p.Detail.Contains("k=1"));
        Assert.True(File.Exists(Path.Combine(dir, "grid-teacher-ddim-trailing-cfg3.png")));
        Assert.True(File.Exists(Path.Combine(dir, "cd-k1--LCM-style-baseline-", "stage-k1", "final", "lora.safetensors")));
    }
}
