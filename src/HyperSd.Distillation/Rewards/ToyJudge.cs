using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Rewards;

/// <summary>
/// The independent judge of models trained on the rewards: a second <see cref="ToyRecognizer"/>, of another width and trained
/// from another seed, that no reward uses (a model that learned to please the rewards' recognizer must still convince this one).
/// </summary>
public static class ToyJudge
{
    public static ToyRecognizerConfig Config { get; } = new() { BlockOutChannels = [24, 48, 96], FeatureDim = 96 };

    /// <summary>The committed recognizer's budget (600 steps of 32) with a seed of its own.</summary>
    public static ToyRecognizerTrainingOptions Options { get; } = new() { Seed = 20_240_421 };

    public static ToyRecognizer Train(ToyRecognizerTrainingOptions? options = null, Device? device = null,
        Action<int, double>? onStep = null) =>
        ToyRecognizerTrainer.Train(options ?? Options, Config, device, onStep);
}
