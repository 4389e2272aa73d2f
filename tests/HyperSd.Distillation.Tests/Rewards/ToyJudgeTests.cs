using System.Diagnostics;
using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.Tests.Toy;
using HyperSd.Distillation.Toy;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Rewards;

/// <summary>Training seeds LibTorch's global generator (<see cref="ToyRecognizerTrainer"/>): alone, as the other seeded
/// trainings.</summary>
[Collection(GlobalRngCollection.Name)]
public sealed class ToyJudgeTests(ITestOutputHelper output)
{
    [Fact]
    public void The_second_recognizer_reads_every_attribute_of_fresh_renders_at_least_99_percent_of_the_time()
    {
        using var committed = ToyRecognizer.FromPretrained(ToyWorld.PretrainedRecognizerDir);
        Assert.NotEqual(committed.Config.BlockOutChannels, ToyJudge.Config.BlockOutChannels); // another model, not a copy
        Assert.NotEqual(0, ToyJudge.Options.Seed); // the committed recognizer's seed is 0

        var watch = Stopwatch.StartNew();
        using var judge = ToyJudge.Train();
        var time = watch.Elapsed;
        // a seed neither recognizer's training drew from, held-out compositions and seen ones
        var (images, scenes) = ToyShapes.Generate(2000, 27_182_818);
        using var _ = images;
        IReadOnlyList<ToyScene> seen;
        using (no_grad()) seen = judge.Recognize(images);
        var a = PretrainedRecognizerTests.Accuracy(scenes, seen);
        output.WriteLine($"judge [{string.Join(", ", ToyJudge.Config.BlockOutChannels)}], features {ToyJudge.Config.FeatureDim}, " +
                         $"{ToyJudge.Options.Steps} steps in {time.TotalSeconds:F1} s; 2000 scenes: shape {a.Shape}, colour {a.Color}, " +
                         $"position {a.Position}, size {a.Size}; whole scene {a.Scene}");
        foreach (var (name, accuracy) in new[] { ("shape", a.Shape), ("colour", a.Color), ("position", a.Position), ("size", a.Size) })
            Assert.True(accuracy.Value >= 0.99, $"{name} accuracy {accuracy} is below 0.99");
    }

    [Fact]
    public void The_committed_judge_is_the_judge_config_and_reads_every_attribute_at_least_99_percent_of_the_time()
    {
        using var judge = ToyRecognizer.FromPretrained(ToyWorld.PretrainedJudgeDir);
        Assert.Equal(ToyJudge.Config.BlockOutChannels, judge.Config.BlockOutChannels);
        var (images, scenes) = ToyShapes.Generate(2000, 27_182_818);
        using var _ = images;
        IReadOnlyList<ToyScene> seen;
        using (no_grad()) seen = judge.Recognize(images);
        var a = PretrainedRecognizerTests.Accuracy(scenes, seen);
        foreach (var (name, accuracy) in new[] { ("shape", a.Shape), ("colour", a.Color), ("position", a.Position), ("size", a.Size) })
            Assert.True(accuracy.Value >= 0.99, $"{name} accuracy {accuracy} is below 0.99");
    }
}
