using static TorchSharp.torch;

namespace HyperSd.Distillation.Toy;

/// <summary>Makes clean toy renders look like a generator's imperfect outputs: Gaussian noise and blur.</summary>
public static class ToyDegradation
{
    /// <summary>Gaussian noise with a standard deviation drawn per image from [0, <paramref name="maxNoise"/>], clamped to [0, 1]:
    /// the recognizer's training augmentation.</summary>
    public static Tensor RandomNoise(Tensor images, double maxNoise, Generator generator)
    {
        using var std = rand([images.shape[0]], generator: generator) * maxNoise;
        return Degrade(images, std, null, generator);
    }

    /// <summary>Per image [N]: a share <paramref name="blur"/> of a Gaussian blur (σ = 1 px) mixed in, then Gaussian noise of
    /// standard deviation <paramref name="noiseStd"/>; clamped to [0, 1].</summary>
    public static Tensor Degrade(Tensor images, Tensor noiseStd, Tensor? blur, Generator generator)
    {
        using var scope = NewDisposeScope();
        var x = images;
        if (blur is not null)
        {
            var share = blur.to(images.dtype, images.device).view(-1, 1, 1, 1);
            x = x * (1 - share) + Blur(images) * share;
        }
        var std = noiseStd.to(images.dtype, images.device).view(-1, 1, 1, 1);
        return (x + randn(images.shape, generator: generator).to(images.device) * std).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary>A Gaussian blur of σ = 1 px (5×5 kernel) on each channel; the black border pads the edges.</summary>
    public static Tensor Blur(Tensor images)
    {
        using var scope = NewDisposeScope();
        var taps = exp(-square(arange(-2, 3, images.dtype, images.device)) / 2);
        taps /= taps.sum();
        long channels = images.shape[1];
        var kernel = outer(taps, taps).expand(channels, 1, 5, 5);
        return nn.functional.conv2d(images, kernel, padding: [2, 2], groups: channels).MoveToOuterDisposeScope();
    }
}
