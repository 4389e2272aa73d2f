using HyperSd.Distillation.Evaluation;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Rewards;

/// <summary>A reward model that feedback learning (ReFL) backpropagates through: <see cref="Reward"/> keeps the graph to the
/// images; <see cref="IImageScorer.Score"/> is the same number without gradients, for evaluation.</summary>
public interface IImageReward : IImageScorer
{
    /// <summary>[N] rewards of images [N, 3, H, W] in [0, 1] for their prompts, differentiable with respect to the images.</summary>
    Tensor Reward(IReadOnlyList<string> prompts, Tensor images);
}

/// <summary>A reward model learnt from preference pairs (<see cref="BradleyTerry.Train"/>), whose reward is its raw score
/// normalised as ImageReward's is: (raw − mean) / std over training images.</summary>
public interface IPairwiseReward : IImageReward
{
    IEnumerable<Parameter> TrainableParameters();
    Tensor RawReward(IReadOnlyList<string> prompts, Tensor images);
    void SetScoreNormalization(double mean, double std);
    /// <summary>Writes config.json and the weights (safetensors) to <paramref name="dir"/> (what its FromPretrained reads).</summary>
    void SavePretrained(string dir);
}
