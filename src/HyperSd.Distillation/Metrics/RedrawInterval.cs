namespace HyperSd.Distillation.Metrics;

/// <summary>
/// An interval for a metric measured on R independent re-draws: each re-draw generates a fresh image set from new seeds
/// and new prompts (and, for a Fréchet distance, is scored against its own fresh reference set where one can be had),
/// and gives one value. The interval is the mean ± t_{(1+c)/2, R−1}·s/√R, Student's t interval for the mean of R
/// values. Not a bootstrap of one image set: resampling with replacement repeats images, which shrinks the fitted
/// covariance's rank and inflates the Fréchet distance, so a bootstrap interval sits above the true value.
/// </summary>
public static class RedrawInterval
{
    /// <summary>The mean of <paramref name="values"/> (R ≥ 2, one per independent re-draw) and its Student-t interval at
    /// confidence <paramref name="confidence"/>.</summary>
    public static MetricEstimate Of(IReadOnlyList<double> values, double confidence = 0.95)
    {
        if (values.Count < 2)
            throw new ArgumentException($"a re-draw interval needs at least 2 independent re-draws, got {values.Count}", nameof(values));
        if (values.Any(v => !double.IsFinite(v)))
            throw new ArgumentException($"re-draw values must be finite, got [{string.Join(", ", values)}]", nameof(values));
        if (!(confidence > 0 && confidence < 1))
            throw new ArgumentOutOfRangeException(nameof(confidence), $"confidence must be in (0, 1), got {confidence}");
        int r = values.Count;
        double mean = values.Average();
        double variance = values.Sum(v => (v - mean) * (v - mean)) / (r - 1);
        double half = StudentT.Quantile((1 + confidence) / 2, r - 1) * Math.Sqrt(variance / r);
        return new MetricEstimate(mean, mean - half, mean + half, r);
    }
}
