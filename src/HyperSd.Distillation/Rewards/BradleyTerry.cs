using HyperSd.Distillation.Evaluation;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Rewards;

/// <summary>Pairwise preference learning as ImageReward trains its reward model: P(better ≻ worse) = σ(r_better − r_worse).</summary>
public static class BradleyTerry
{
    /// <summary>−log σ(r_better − r_worse), averaged over the pairs.</summary>
    public static Tensor Loss(Tensor better, Tensor worse) => nn.functional.softplus(worse - better).mean();

    /// <summary>Share of pairs that <paramref name="scorer"/> ranks right (a strictly higher score for the better image).</summary>
    public static double Accuracy(IImageScorer scorer, IReadOnlyList<string> prompts, Tensor better, Tensor worse)
    {
        using var b = scorer.Score(prompts, better);
        using var w = scorer.Score(prompts, worse);
        using var right = b.gt(w).to(ScalarType.Float64).mean();
        return right.item<double>();
    }

    /// <summary>
    /// Adam with a cosine learning-rate decay on the Bradley–Terry loss of <paramref name="model"/>'s raw scores, a fresh batch
    /// of <paramref name="batchSize"/> pairs from <paramref name="pairs"/> each step; then, in eval mode, sets the reward's
    /// normalisation from the scores of both images of <paramref name="normalizationPairs"/> more pairs.
    /// </summary>
    public static void Train<TModel>(TModel model, int steps, int batchSize, double learningRate, int normalizationPairs,
        Func<int, (IReadOnlyList<string> Prompts, Tensor Better, Tensor Worse)> pairs, Action<int, double>? onStep = null)
        where TModel : nn.Module, IPairwiseReward
    {
        if (steps <= 0 || batchSize <= 0 || learningRate <= 0 || normalizationPairs < 2)
            throw new ArgumentException($"invalid pairwise training: {steps} steps of {batchSize} pairs, learning rate {learningRate}, " +
                                        $"{normalizationPairs} normalisation pairs (at least 2)");
        model.train();
        using (var optimizer = optim.Adam(model.TrainableParameters(), learningRate))
        {
            var schedule = optim.lr_scheduler.CosineAnnealingLR(optimizer, steps);
            for (int step = 0; step < steps; step++)
            {
                using var scope = NewDisposeScope();
                optimizer.zero_grad();
                var (prompts, better, worse) = pairs(batchSize);
                var loss = Loss(model.RawReward(prompts, better), model.RawReward(prompts, worse));
                loss.backward();
                optimizer.step();
                schedule.step();
                onStep?.Invoke(step, loss.item<float>());
            }
        }
        model.eval();
        using (no_grad())
        using (NewDisposeScope())
        {
            var (prompts, better, worse) = pairs(normalizationPairs);
            var scores = cat([model.RawReward(prompts, better), model.RawReward(prompts, worse)]);
            model.SetScoreNormalization(scores.mean().item<float>(), scores.std().item<float>());
        }
    }
}
