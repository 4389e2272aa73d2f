using System.Diagnostics;
using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.Toy;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Rewards;

/// <summary>One preference model trained per test run at the test budget, on the committed recognizer.</summary>
public sealed class TrainedPreferenceModel : IDisposable
{
    public static readonly ToyPreferenceTrainingOptions Options = new() { Steps = 300 };

    public ToyRecognizer Recognizer { get; } = ToyRecognizer.FromPretrained(ToyWorld.PretrainedRecognizerDir);
    public ToyPreferenceModel Model { get; }
    public TimeSpan TrainingTime { get; }
    public double FinalLoss { get; }

    public TrainedPreferenceModel()
    {
        var watch = Stopwatch.StartNew();
        double loss = double.NaN;
        Model = ToyPreferenceTrainer.Train(Options, Recognizer, onStep: (_, l) => loss = l);
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
public sealed class ToyPreferenceModelTests(TrainedPreferenceModel trained, ITestOutputHelper output)
    : IClassFixture<TrainedPreferenceModel>
{
    const int HeldOutSeed = 16_000_001;

    [Fact]
    public void Ranks_known_answer_pairs_of_held_out_captions_after_training()
    {
        var (prompts, better, worse) = ToyPreferenceTrainer.Render(
            ToyPreferencePairs.Sample(new Random(HeldOutSeed), 1000, ToyCaptionSplit.HeldOut), 0, new Generator(HeldOutSeed, CPU));
        double accuracy = BradleyTerry.Accuracy(trained.Model, prompts, better, worse);
        using var untrained = new ToyPreferenceModel(trained.Model.Config, trained.Recognizer);
        double control = BradleyTerry.Accuracy(untrained, prompts, better, worse);
        output.WriteLine($"trained {TrainedPreferenceModel.Options.Steps} steps in {trained.TrainingTime.TotalSeconds:F1} s, final loss " +
                         $"{trained.FinalLoss:F3}; pairwise accuracy on 1000 held-out-caption pairs {accuracy:F3}, untrained {control:F3}");
        // measured 0.896–0.899 (seed 0, 300 steps; 0.911 at 600); the untrained model, same image tower, 0.52: it fails this bar
        Assert.True(accuracy >= 0.85, $"held-out pairwise accuracy {accuracy:F3}");
        Assert.True(control < 0.85, $"the untrained model passes too: {control:F3}");
    }

    [Fact]
    public void Reward_is_normalised_and_differentiable_with_respect_to_the_images()
    {
        var pairs = ToyPreferencePairs.Sample(new Random(HeldOutSeed + 1), 64, ToyCaptionSplit.Train);
        var (prompts, better, worse) = ToyPreferenceTrainer.Render(pairs, 0, new Generator(1, CPU));
        using var images = cat([better, worse]).requires_grad_(true);
        using var reward = trained.Model.Reward([.. prompts, .. prompts], images);
        reward.sum().backward();
        Assert.True(images.grad!.isfinite().all().item<bool>() && images.grad!.abs().sum().item<float>() > 0, "no gradient to the images");
        Assert.DoesNotContain(trained.Model.parameters(), p => !p.requires_grad && p.grad is not null); // the image tower is frozen
        trained.Model.zero_grad();
        // normalised on training pairs like these: mean near 0, std near 1
        double mean = reward.mean().item<float>(), std = reward.std().item<float>();
        output.WriteLine($"reward over {images.shape[0]} train-pair images: mean {mean:F2}, std {std:F2}");
        Assert.InRange(mean, -0.5, 0.5);
        Assert.InRange(std, 0.6, 1.6);
        using var scored = trained.Model.Score([.. prompts, .. prompts], images.detach());
        Assert.True(scored.allclose(reward.detach(), 1e-5, 1e-5), "Score differs from Reward");
    }

    [Fact]
    public void Survives_save_and_load_and_names_broken_weights()
    {
        var dir = Directory.CreateTempSubdirectory("toy-preference").FullName;
        try
        {
            trained.Model.SavePretrained(dir);
            Assert.True(File.Exists(Path.Combine(dir, "config.json")));
            using var loaded = ToyPreferenceModel.FromPretrained(dir);
            Assert.Equal(trained.Model.Config.ScoreMean, loaded.Config.ScoreMean);
            Assert.Equal(trained.Model.Config.ScoreStd, loaded.Config.ScoreStd);
            var (prompts, better, _) = ToyPreferenceTrainer.Render(
                ToyPreferencePairs.Sample(new Random(3), 16, ToyCaptionSplit.HeldOut), 0, new Generator(3, CPU));
            using var before = trained.Model.Score(prompts, better);
            using var after = loaded.Score(prompts, better);
            Assert.True(after.allclose(before), "scores differ after save and load");
            RewardWeightFiles.AssertBrokenWeightsAreNamed(dir, "mlp.layers.0.weight", "text_encoder.text_model.final_layer_norm.bias",
                d => ToyPreferenceModel.FromPretrained(d).Dispose());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
