using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Rewards;

public sealed record ToyAestheticTrainingOptions
{
    public int Steps { get; init; } = 400;
    /// <summary>Pairs per step.</summary>
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 1e-3;
    public int Seed { get; init; }
    /// <summary>Noise std at the worst degradation level (1).</summary>
    public double MaxNoise { get; init; } = 0.2;
    /// <summary>The worse image of a pair is at least this much more degraded (levels in [0, 1]).</summary>
    public double MinGap { get; init; } = 0.25;
    /// <summary>Pairs whose scores set the reward's normalisation (mean 0, std 1 over their images).</summary>
    public int NormalizationPairs { get; init; } = 256;
}

/// <summary>Trains <see cref="ToyAestheticModel"/>'s head with the Bradley–Terry loss on pairs of renders of one train-split
/// scene, the better one cleaner (<see cref="Pairs"/>), then normalises its reward.</summary>
public static class ToyAestheticTrainer
{
    /// <param name="imageEncoder">The trained recognizer whose features the head reads (the rewards' recognizer).</param>
    public static ToyAestheticModel Train(ToyAestheticTrainingOptions options, ToyRecognizer imageEncoder, Device? device = null,
        Action<int, double>? onStep = null)
    {
        if (options.MaxNoise < 0 || options.MinGap is <= 0 or > 1)
            throw new ArgumentException($"invalid toy aesthetic training options: {options}");
        manual_seed(options.Seed);
        var model = new ToyAestheticModel(new ToyAestheticModelConfig { ImageEncoder = imageEncoder.Config }, imageEncoder, device);
        var random = new Random(options.Seed);
        var noise = new Generator((ulong)options.Seed, CPU);
        BradleyTerry.Train(model, options.Steps, options.BatchSize, options.LearningRate, options.NormalizationPairs,
            count => Pairs(count, ToyCaptionSplit.Train, options, random, noise), onStep);
        return model;
    }

    /// <summary>
    /// <paramref name="count"/> pairs of renders of random scenes of <paramref name="split"/>: per pair one kind of degradation
    /// (noise, blur or both, <see cref="ToyDegradation.Degrade"/>) at two levels, the worse one in [min_gap, 1] and the better
    /// one at least min_gap lower (a third of the better images clean). Level l means noise std l · max_noise and a blur share l.
    /// </summary>
    public static (IReadOnlyList<string> Prompts, Tensor Better, Tensor Worse) Pairs(int count, ToyCaptionSplit split,
        ToyAestheticTrainingOptions options, Random random, Generator noise)
    {
        var scenes = ToyShapes.RandomScenes(count, random.Next(), split);
        var (noiseBetter, noiseWorse, blurBetter, blurWorse) = (new float[count], new float[count], new float[count], new float[count]);
        for (int i = 0; i < count; i++)
        {
            double worse = options.MinGap + random.NextDouble() * (1 - options.MinGap);
            double better = random.Next(3) == 0 ? 0 : random.NextDouble() * (worse - options.MinGap);
            int kind = random.Next(3); // 0 noise, 1 blur, 2 both
            if (kind != 1) (noiseBetter[i], noiseWorse[i]) = ((float)(better * options.MaxNoise), (float)(worse * options.MaxNoise));
            if (kind != 0) (blurBetter[i], blurWorse[i]) = ((float)better, (float)worse);
        }
        using var clean = ToyShapes.Render(scenes);
        using var nb = tensor(noiseBetter);
        using var nw = tensor(noiseWorse);
        using var bb = tensor(blurBetter);
        using var bw = tensor(blurWorse);
        return (scenes.Select(s => s.Caption).ToList(), ToyDegradation.Degrade(clean, nb, bb, noise),
            ToyDegradation.Degrade(clean, nw, bw, noise));
    }
}
