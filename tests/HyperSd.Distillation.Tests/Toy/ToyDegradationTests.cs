using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Toy;

public sealed class ToyDegradationTests
{
    [Fact]
    public void Random_noise_draws_as_the_recognizer_s_training_always_did()
    {
        // the committed recognizer was trained with this augmentation inline: the same draws keep it reproducible
        var (images, _) = ToyShapes.Generate(8, seed: 1);
        using var _ = images;
        var reference = new Generator(3, CPU);
        using var std = rand([8, 1, 1, 1], generator: reference) * 0.1;
        using var expected = (images + randn(images.shape, generator: reference) * std).clamp(0, 1);
        using var actual = ToyDegradation.RandomNoise(images, 0.1, new Generator(3, CPU));
        Assert.True(actual.equal(expected).all().item<bool>());
    }

    [Fact]
    public void Level_zero_is_the_clean_image_and_blur_smooths_edges()
    {
        var (images, _) = ToyShapes.Generate(8, seed: 2);
        using var _ = images;
        using var none = zeros(8);
        using var same = ToyDegradation.Degrade(images, none, none, new Generator(1, CPU));
        Assert.True(same.equal(images).all().item<bool>());
        static float EdgeEnergy(Tensor x) => (x[.., .., 1..] - x[.., .., ..^1]).square().sum().item<float>();
        using var blurred = ToyDegradation.Blur(images);
        Assert.Equal(images.shape, blurred.shape);
        Assert.True(EdgeEnergy(blurred) < 0.5 * EdgeEnergy(images), "blur did not smooth the edges");
    }
}
