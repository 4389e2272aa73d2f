using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Rewards;

/// <summary>Training seeds LibTorch's global generator (initialisation, dropout): alone, so that no parallel test draws from it.</summary>
[Collection(GlobalRngCollection.Name)]
public sealed class RewardTrainingDeterminismTests
{
    [Fact]
    public void The_same_seed_gives_the_same_preference_model_and_another_seed_another()
    {
        using var recognizer = ToyRecognizer.FromPretrained(ToyWorld.PretrainedRecognizerDir);
        var options = new ToyPreferenceTrainingOptions { Steps = 3, BatchSize = 4, NormalizationPairs = 8, Seed = 5 };
        var (prompts, images, _) = ToyPreferenceTrainer.Render(
            ToyPreferencePairs.Sample(new Random(1), 8, ToyCaptionSplit.HeldOut), 0, new Generator(1, CPU));
        Tensor Scores(ToyPreferenceTrainingOptions o)
        {
            using var model = ToyPreferenceTrainer.Train(o, recognizer);
            return model.Score(prompts, images);
        }
        using var first = Scores(options);
        using var second = Scores(options);
        using var other = Scores(options with { Seed = 6 });
        Assert.True(first.equal(second).all().item<bool>(), "same seed, different models");
        Assert.False(first.allclose(other), "another seed, same model");
    }

    [Fact]
    public void The_same_seed_gives_the_same_aesthetic_model_and_another_seed_another()
    {
        using var recognizer = ToyRecognizer.FromPretrained(ToyWorld.PretrainedRecognizerDir);
        var options = new ToyAestheticTrainingOptions { Steps = 3, BatchSize = 4, NormalizationPairs = 8, Seed = 5 };
        var (prompts, images, _) = ToyAestheticTrainer.Pairs(8, ToyCaptionSplit.HeldOut, options, new Random(1), new Generator(1, CPU));
        Tensor Scores(ToyAestheticTrainingOptions o)
        {
            using var model = ToyAestheticTrainer.Train(o, recognizer);
            return model.Score(prompts, images);
        }
        using var first = Scores(options);
        using var second = Scores(options);
        using var other = Scores(options with { Seed = 6 });
        Assert.True(first.equal(second).all().item<bool>(), "same seed, different models");
        Assert.False(first.allclose(other), "another seed, same model");
    }
}
