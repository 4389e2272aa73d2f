using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Rewards;

public sealed record ToyPreferenceTrainingOptions
{
    public int Steps { get; init; } = 600;
    /// <summary>Pairs per step.</summary>
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 2e-3;
    public int Seed { get; init; }
    /// <summary>Both images of a pair get Gaussian noise of a standard deviation drawn per image from [0, max_noise], so that the
    /// model ranks imperfect generated images too.</summary>
    public double MaxNoise { get; init; } = 0.1;
    /// <summary>Pairs whose scores set the reward's normalisation (mean 0, std 1 over their images).</summary>
    public int NormalizationPairs { get; init; } = 256;
}

/// <summary>Trains <see cref="ToyPreferenceModel"/> (all but its frozen image tower) with the Bradley–Terry loss on fresh
/// known-answer pairs for train-split captions (<see cref="ToyPreferencePairs"/>).</summary>
public static class ToyPreferenceTrainer
{
    /// <param name="imageEncoder">The trained recognizer the image tower is copied from (the rewards' recognizer).</param>
    public static ToyPreferenceModel Train(ToyPreferenceTrainingOptions options, ToyRecognizer imageEncoder,
        ToyPreferenceModelConfig? config = null, Device? device = null, Action<int, double>? onStep = null)
    {
        if (options.MaxNoise < 0) throw new ArgumentException($"invalid toy preference training options: {options}");
        manual_seed(options.Seed);
        var model = new ToyPreferenceModel((config ?? new ToyPreferenceModelConfig()) with { ImageEncoder = imageEncoder.Config },
            imageEncoder, device);
        var random = new Random(options.Seed);
        var noise = new Generator((ulong)options.Seed, CPU);
        BradleyTerry.Train(model, options.Steps, options.BatchSize, options.LearningRate, options.NormalizationPairs,
            count => Render(ToyPreferencePairs.Sample(random, count, ToyCaptionSplit.Train), options.MaxNoise, noise), onStep);
        return model;
    }

    /// <summary>The pairs' prompts and their better and worse images, each with noise of a random std up to
    /// <paramref name="maxNoise"/>.</summary>
    public static (IReadOnlyList<string> Prompts, Tensor Better, Tensor Worse) Render(IReadOnlyList<ToyScenePair> pairs, double maxNoise,
        Generator noise)
    {
        using var better = ToyShapes.Render(pairs.Select(p => p.Better).ToList());
        using var worse = ToyShapes.Render(pairs.Select(p => p.Worse).ToList());
        return (pairs.Select(p => p.Caption).ToList(), ToyDegradation.RandomNoise(better, maxNoise, noise),
            ToyDegradation.RandomNoise(worse, maxNoise, noise));
    }
}
