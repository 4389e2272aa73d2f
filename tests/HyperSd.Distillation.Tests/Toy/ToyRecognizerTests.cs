using HyperSd.Distillation.Toy;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Toy;

[Collection(TrainedRecognizerCollection.Name)]
public sealed class ToyRecognizerTests(TrainedRecognizer trained, ITestOutputHelper output)
{
    [Fact]
    public void ReachesHighAccuracyOnHeldOutImages()
    {
        var (images, scenes) = ToyShapes.Generate(1000, seed: 12345);
        using var _ = images;
        var accuracy = ToyRecognizerTrainer.Evaluate(trained.Model, images, scenes);
        output.WriteLine($"trained in {trained.TrainingTime.TotalSeconds:F1} s, final loss {trained.FinalLoss:F4}; held-out accuracy {accuracy}");
        Assert.True(accuracy.Shape >= 0.95 && accuracy.Color >= 0.95 && accuracy.Size >= 0.95, $"accuracy too low: {accuracy}");

        // images a generator makes are not exact: the recognizer also reads noisy ones
        using var noisy = (images + randn(images.shape, generator: new Generator(3, CPU)) * 0.05).clamp(0, 1);
        var noisyAccuracy = ToyRecognizerTrainer.Evaluate(trained.Model, noisy, scenes);
        output.WriteLine($"with noise of std 0.05: {noisyAccuracy}");
        Assert.True(noisyAccuracy.Shape >= 0.95 && noisyAccuracy.Color >= 0.95 && noisyAccuracy.Size >= 0.95, $"accuracy on noisy images too low: {noisyAccuracy}");
    }

    [Fact]
    public void FeaturesHaveTheConfiguredWidthAndSurviveSaveAndLoad()
    {
        var dir = Directory.CreateTempSubdirectory("toy-recognizer").FullName;
        try
        {
            var (images, _) = ToyShapes.Generate(300, seed: 7);
            using var __ = images;
            using var features = trained.Model.Features(images);
            Assert.Equal([300L, trained.Model.Config.FeatureDim], features.shape);
            trained.Model.SavePretrained(dir);
            using var loaded = ToyRecognizer.FromPretrained(dir);
            using var reloaded = loaded.Features(images);
            Assert.True(reloaded.allclose(features), "features differ after save and load");
            Assert.Equal(trained.Model.Recognize(images), loaded.Recognize(images));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void RejectsImagesOfTheWrongSize()
    {
        using var model = new ToyRecognizer(new ToyRecognizerConfig());
        using var images = zeros(2, 3, 16, 16);
        var e = Assert.Throws<ArgumentException>(() => model.Features(images));
        Assert.Contains("[2, 3, 16, 16]", e.Message);
    }
}
