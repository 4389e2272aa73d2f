using HyperSd.Diffusion.Images;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Evaluation;

[Collection(GlobalRngCollection.Name)]
public class EvaluatorTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("eval-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    /// <summary>Mean colour per 8×8 block: a cheap stand-in feature model for the evaluator's plumbing.</summary>
    sealed class BlockColours : IImageFeatures, IPromptAdherence
    {
        public Tensor Features(Tensor images) => nn.functional.avg_pool2d(images, 8).flatten(1);
        public IReadOnlyList<bool> Matches(IReadOnlyList<string> prompts, Tensor images) => prompts.Select((_, i) => i % 2 == 0).ToList();
    }

    [Fact]
    public void Rows_per_step_count_and_metric_and_a_prompt_by_step_grid()
    {
        using var pipeline = TinyToyPipeline.Create();
        var features = new BlockColours();
        var (real, _) = ToyShapes.Generate(64, 3);
        var evaluator = new ModelEvaluator(features, features.Features(real), features);
        var prompts = ToyWorld.EvaluationPrompts(6);
        var grid = Path.Combine(dir, "grid.png");
        var rows = evaluator.Evaluate("untrained", pipeline, prompts, SamplerSpec.Tcd(0.3),
            new EvaluationOptions { Steps = [1, 2], BatchSize = 4, GridPrompts = 3 }, grid);

        Assert.Equal(6, rows.Count);
        Assert.All(rows, r => Assert.Equal(("untrained", "tcd-eta0.3"), (r.Model, r.Sampler)));
        Assert.Equal([(1, "fd"), (1, "kid"), (1, "adherence"), (2, "fd"), (2, "kid"), (2, "adherence")], rows.Select(r => (r.Steps, r.Metric)));
        Assert.All(rows.Where(r => r.Metric == "fd"), r => Assert.True(r.Value > 0 && double.IsFinite(r.Value) && r.Low is null));
        Assert.All(rows.Where(r => r.Metric == "kid"), r => Assert.True(r.Low < r.Value && r.Value < r.High, $"{r}"));
        // 3 of 6: Wilson's 95 % interval
        Assert.All(rows.Where(r => r.Metric == "adherence"), r => Assert.Equal((0.5, 0.1876, 0.8124),
            (r.Value, Math.Round(r.Low!.Value, 4), Math.Round(r.High!.Value, 4))));
        using var image = ImageFiles.LoadRgb(grid);
        Assert.Equal(new long[] { 3, 3 * 34 + 2, 2 * 34 + 2 }, image.shape); // 3 prompts × 2 step counts of 32 px, 2 px gaps
        Assert.Equal("tcd-eta0.3", ImageFiles.ReadPngText(grid)["sampler"]);
    }

    /// <summary>Hands out a fixed list of matches per call, whatever the images: the pairing arithmetic on known data.</summary>
    sealed class ScriptedAdherence(params bool[][] calls) : IPromptAdherence
    {
        int next;
        public IReadOnlyList<bool> Matches(IReadOnlyList<string> prompts, Tensor images) => calls[next++];
    }

    /// <summary>With a control, each later model gets its per-prompt adherence difference to the control's images at the same
    /// sampler and steps, with Student's t on the differences; a sampler the control was not run with gets none.</summary>
    [Fact]
    public void A_model_after_the_control_gets_its_paired_adherence_gain()
    {
        using var pipeline = TinyToyPipeline.Create();
        bool[] control = [true, false, false, false, true, false], student = [true, true, false, true, true, false];
        var evaluator = new ModelEvaluator(null, null, new ScriptedAdherence(control, student, student)) { Control = "untrained" };
        var prompts = ToyWorld.EvaluationPrompts(6);
        var options = new EvaluationOptions { Steps = [1], BatchSize = 6 };
        Assert.DoesNotContain(evaluator.Evaluate("untrained", pipeline, prompts, SamplerSpec.DdimTrailing(), options),
            r => r.Metric == "adherence-gain");
        var gain = evaluator.Evaluate("student", pipeline, prompts, SamplerSpec.DdimTrailing(), options)
            .Single(r => r.Metric == "adherence-gain");
        // differences 0, 1, 0, 1, 0, 0: mean 1/3, s = 0.5164, t(0.975, 5) = 2.5706
        Assert.Equal((0.3333, -0.2086, 0.8753),
            (Math.Round(gain.Value, 4), Math.Round(gain.Low!.Value, 4), Math.Round(gain.High!.Value, 4)));
        Assert.DoesNotContain(evaluator.Evaluate("student", pipeline, prompts, SamplerSpec.Tcd(0.3), options),
            r => r.Metric == "adherence-gain");
    }

    /// <summary>Mean colour per 4×4 block: another feature model than <see cref="BlockColours"/>.</summary>
    sealed class FineBlockColours : IImageFeatures
    {
        public Tensor Features(Tensor images) => nn.functional.avg_pool2d(images, 4).flatten(1);
    }

    /// <summary>The independent judge measures the Fréchet distance and KID on its own features of its own real set: a model
    /// trained on the recognizer's reward is judged on features it never saw.</summary>
    [Fact]
    public void The_judge_adds_its_own_distances_on_its_own_features()
    {
        var features = new BlockColours();
        var judgeFeatures = new FineBlockColours();
        var (real, _) = ToyShapes.Generate(64, 3);
        var (images, scenes) = ToyShapes.Generate(16, 5);
        var judge = new IndependentJudge(features, judgeFeatures, judgeFeatures.Features(real));
        var rows = new ModelEvaluator(features, features.Features(real), judge: judge)
            .Measure("m", "ddim", 1, scenes.Select(s => s.Caption).ToList(), images).ToDictionary(r => r.Metric);

        Assert.Equal(["adherence-judge", "fd", "fd-judge", "kid", "kid-judge"], rows.Keys.Order());
        Assert.Equal(Distillation.Metrics.FrechetDistance.Compute(judgeFeatures.Features(images), judgeFeatures.Features(real)),
            rows["fd-judge"].Value, 9);
        Assert.NotEqual(rows["fd"].Value, rows["fd-judge"].Value);
        Assert.True(rows["kid-judge"].Low < rows["kid-judge"].Value && rows["kid-judge"].Value < rows["kid-judge"].High);
    }

    [Fact]
    public void The_same_seeds_give_the_same_rows_and_real_images_score_near_zero()
    {
        using var pipeline = TinyToyPipeline.Create();
        var features = new BlockColours();
        var (real, _) = ToyShapes.Generate(128, 4);
        var evaluator = new ModelEvaluator(features, features.Features(real));
        var prompts = ToyWorld.EvaluationPrompts(8);
        var options = new EvaluationOptions { Steps = [2], BatchSize = 8 };
        var a = evaluator.Evaluate("m", pipeline, prompts, SamplerSpec.DdimTrailing(), options);
        var b = evaluator.Evaluate("m", pipeline, prompts, SamplerSpec.DdimTrailing(), options);
        Assert.Equal(a, b);
        var self = evaluator.Measure("real", "-", 0, prompts, real).Single(r => r.Metric == "fd");
        Assert.InRange(self.Value, 0, 1e-6);
    }
}
