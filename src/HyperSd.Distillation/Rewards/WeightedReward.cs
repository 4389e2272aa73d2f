using static TorchSharp.torch;

namespace HyperSd.Distillation.Rewards;

/// <summary>The rewards feedback learning optimises (Hyper-SD §3.2: aesthetic, preference and structural feedback), each with
/// its weight: r = Σ wᵢ·rᵢ per image.</summary>
public sealed class WeightedReward
{
    public IReadOnlyList<(IImageReward Reward, double Weight)> Terms { get; }

    /// <summary>Terms with weight 0 are dropped; weights must be finite and non-negative, and one must be positive.</summary>
    public WeightedReward(IEnumerable<(IImageReward Reward, double Weight)> terms)
    {
        var all = terms.ToList();
        var bad = all.FirstOrDefault(t => !double.IsFinite(t.Weight) || t.Weight < 0);
        if (bad.Reward is not null)
            throw new ArgumentException($"reward '{bad.Reward.Name}': weight {bad.Weight} must be finite and non-negative");
        Terms = all.Where(t => t.Weight > 0).ToList();
        if (Terms.Count == 0)
            throw new ArgumentException(all.Count == 0 ? "no rewards given: feedback learning needs at least one"
                : $"the reward weights are all zero ({string.Join(", ", all.Select(t => $"{t.Reward.Name}: 0"))}): " +
                  "at least one must be positive");
    }

    /// <summary>[N] weighted rewards of images [N, 3, H, W] in [0, 1], differentiable with respect to them, and each term's
    /// batch mean (unweighted) for progress reports.</summary>
    public (Tensor Reward, IReadOnlyDictionary<string, double> Means) Compute(IReadOnlyList<string> prompts, Tensor images)
    {
        using var scope = NewDisposeScope();
        var means = new Dictionary<string, double>();
        Tensor? total = null;
        foreach (var (reward, weight) in Terms)
        {
            var r = reward.Reward(prompts, images);
            means[reward.Name] = r.detach().mean().item<float>();
            total = total is null ? r * weight : total + r * weight;
        }
        return (total!.MoveToOuterDisposeScope(), means);
    }

    /// <summary>[N] weighted rewards of images [N, 3, H, W] in [0, 1] without gradients (each term's
    /// <see cref="Evaluation.IImageScorer.Score"/>): ranking images, not learning from them.</summary>
    public Tensor Score(IReadOnlyList<string> prompts, Tensor images)
    {
        using var scope = NewDisposeScope();
        Tensor? total = null;
        foreach (var (reward, weight) in Terms)
        {
            var r = reward.Score(prompts, images);
            total = total is null ? r * weight : total + r * weight;
        }
        return total!.MoveToOuterDisposeScope();
    }
}
