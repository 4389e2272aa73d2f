using System.Diagnostics;
using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.Toy;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Rewards;

/// <summary>One aesthetic model trained per test run at its default budget, on the committed recognizer.</summary>
public sealed class TrainedAestheticModel : IDisposable
{
    public static readonly ToyAestheticTrainingOptions Options = new();

    public ToyRecognizer Recognizer { get; } = ToyRecognizer.FromPretrained(ToyWorld.PretrainedRecognizerDir);
    public ToyAestheticModel Model { get; }
    public TimeSpan TrainingTime { get; }
    public double FinalLoss { get; }

    public TrainedAestheticModel()
    {
        var watch = Stopwatch.StartNew();
        double loss = double.NaN;
        Model = ToyAestheticTrainer.Train(Options, Recognizer, onStep: (_, l) => loss = l);
        TrainingTime = watch.Elapsed;
        FinalLoss = loss;
    }

    public void Dispose()
    {
        Model.Dispose();
        Recognizer.Dispose();
    }
}

[Collection(GlobalRngCollection.Name)] // its fixture trains with a seeded global generator
public sealed class ToyAestheticModelTests(TrainedAestheticModel trained, ITestOutputHelper output) : IClassFixture<TrainedAestheticModel>
{
    const int HeldOutSeed = 16_000_002;

    static (IReadOnlyList<string> Prompts, Tensor Better, Tensor Worse) HeldOutPairs(int count) =>
        ToyAestheticTrainer.Pairs(count, ToyCaptionSplit.HeldOut, TrainedAestheticModel.Options, new Random(HeldOutSeed),
            new Generator(HeldOutSeed, CPU));

    [Fact]
    public void Prefers_the_cleaner_render_of_held_out_scenes_after_training()
    {
        var (prompts, better, worse) = HeldOutPairs(1000);
        double accuracy = BradleyTerry.Accuracy(trained.Model, prompts, better, worse);
        using var untrained = new ToyAestheticModel(trained.Model.Config, trained.Recognizer);
        double control = BradleyTerry.Accuracy(untrained, prompts, better, worse);
        output.WriteLine($"trained {TrainedAestheticModel.Options.Steps} steps in {trained.TrainingTime.TotalSeconds:F1} s, final loss " +
                         $"{trained.FinalLoss:F3}; pairwise accuracy on 1000 held-out-scene pairs {accuracy:F3}, untrained {control:F3}");
        // measured 0.992 (seed 0, 400 steps; 0.987 at 300); the untrained head on the same features 0.47–0.55: it fails this bar
        Assert.True(accuracy >= 0.95, $"held-out pairwise accuracy {accuracy:F3}");
        Assert.True(control < 0.95, $"the untrained model passes too: {control:F3}");
    }

    [Fact]
    public void Reward_ignores_the_prompt_and_is_differentiable_with_respect_to_the_images()
    {
        var (prompts, better, worse) = HeldOutPairs(64);
        using var images = cat([better, worse]).requires_grad_(true);
        using var reward = trained.Model.Reward([.. prompts, .. prompts], images);
        reward.sum().backward();
        Assert.True(images.grad!.isfinite().all().item<bool>() && images.grad!.abs().sum().item<float>() > 0, "no gradient to the images");
        Assert.DoesNotContain(trained.Model.parameters(), p => !p.requires_grad && p.grad is not null); // the recognizer is frozen
        trained.Model.zero_grad();
        using var otherPrompts = trained.Model.Score(Enumerable.Repeat("a red circle at the top left", 128).ToList(), images.detach());
        Assert.True(otherPrompts.allclose(reward.detach(), 1e-5, 1e-5), "the prompt changed the aesthetic score");
        output.WriteLine($"reward mean {reward.mean().item<float>():F2}, std {reward.std().item<float>():F2}");
    }

    [Fact]
    public void Survives_save_and_load_and_names_broken_weights()
    {
        var dir = Directory.CreateTempSubdirectory("toy-aesthetic").FullName;
        try
        {
            trained.Model.SavePretrained(dir);
            using var loaded = ToyAestheticModel.FromPretrained(dir);
            Assert.Equal(trained.Model.Config.ScoreMean, loaded.Config.ScoreMean);
            var (prompts, better, _) = HeldOutPairs(16);
            using var before = trained.Model.Score(prompts, better);
            using var after = loaded.Score(prompts, better);
            Assert.True(after.allclose(before), "scores differ after save and load");
            RewardWeightFiles.AssertBrokenWeightsAreNamed(dir, "image_encoder.fc.weight", "mlp.layers.7.bias",
                d => ToyAestheticModel.FromPretrained(d).Dispose());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
