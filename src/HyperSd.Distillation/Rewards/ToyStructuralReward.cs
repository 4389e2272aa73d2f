using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Rewards;

/// <summary>
/// Hyper-SD's instance-segmentation feedback in miniature: how surely a <see cref="ToyRecognizer"/> reads, in each position
/// cell, what the caption asks for there. Per image, the mean over the requested attributes (shape, colour and size, where the
/// caption names it, of each requested object; "empty" for every cell the caption leaves empty) of the recognizer's
/// probability of the requested class, or its log-probability (stronger gradients where the image is far off). Differentiable
/// with respect to the images; the recognizer is frozen (a reward is a fixed judge while the generator learns).
/// </summary>
public sealed class ToyStructuralReward : IImageReward
{
    readonly ToyRecognizer recognizer;

    public ToyStructuralReward(ToyRecognizer recognizer, bool logProbability = false)
    {
        this.recognizer = recognizer;
        LogProbability = logProbability;
        recognizer.eval();
        foreach (var p in recognizer.parameters()) p.requires_grad = false;
    }

    public bool LogProbability { get; }

    public string Name => LogProbability ? "toy-structure-logp" : "toy-structure";

    /// <summary>[N] rewards of images [N, 3, 32, 32] in [0, 1] for their prompts, with gradients to the images: probability
    /// in [0, 1] (1: every requested attribute read with certainty) or log-probability (≤ 0).</summary>
    public Tensor Reward(IReadOnlyList<string> prompts, Tensor images)
    {
        if (prompts.Count != images.shape[0])
            throw new ArgumentException($"expected one prompt per image, got {prompts.Count} prompts for {images.shape[0]} images");
        using var scope = NewDisposeScope();
        var output = recognizer.call(images);
        var (shape, color, size) = ToyRecognizerTrainer.Targets(prompts.Select(ToyShapes.ParseCaption).ToList());
        var terms = new[] { Term(output.ShapeLogits, shape), Term(output.ColorLogits, color), Term(output.SizeLogits, size) };
        var total = terms.Select(t => t.Sum).Aggregate((a, b) => a + b);
        var count = terms.Select(t => t.Count).Aggregate((a, b) => a + b);
        return (total / count).MoveToOuterDisposeScope();
    }

    /// <summary>[N] rewards without gradients (the evaluator's metric).</summary>
    public Tensor Score(IReadOnlyList<string> prompts, Tensor images)
    {
        using var _ = no_grad();
        return Reward(prompts, images);
    }

    /// <summary>Per image, the sum over cells of the requested class's (log-)probability and the number of cells with a target.</summary>
    (Tensor Sum, Tensor Count) Term(Tensor logits, Tensor target)
    {
        target = target.to(logits.device);
        var mask = target.ne(ToyRecognizerTrainer.Ignore);
        var picked = logits.log_softmax(-1).gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1);
        if (!LogProbability) picked = picked.exp();
        return ((picked * mask).sum(1), mask.sum(1).to(logits.dtype));
    }
}
