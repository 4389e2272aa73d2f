namespace HyperSd.Distillation.Metrics;

/// <summary>
/// The Wilson score interval for a binomial proportion (Wilson 1927; Newcombe 1998, method 3): the p whose score test
/// does not reject k successes in n trials, (p̂ + z²/2n ± z·√(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n). Unlike the Wald
/// interval p̂ ± z·√(p̂(1 − p̂)/n) it stays inside [0, 1], is not empty at 0 or n successes, and covers close to its
/// nominal level at the small n of an evaluation (prompt adherence over a few hundred prompts).
/// </summary>
public static class WilsonInterval
{
    /// <summary>The standard normal's 0.975 quantile: z for a two-sided 95 % interval.</summary>
    public const double Z95 = 1.959963984540054;

    /// <summary><paramref name="successes"/> of <paramref name="trials"/>: the observed share and its interval.</summary>
    public static MetricEstimate Of(int successes, int trials, double z = Z95)
    {
        if (trials < 1) throw new ArgumentOutOfRangeException(nameof(trials), $"need at least one trial, got {trials}");
        if (successes < 0 || successes > trials)
            throw new ArgumentOutOfRangeException(nameof(successes), $"successes must be in [0, {trials}] (trials), got {successes}");
        if (!(z > 0) || !double.IsFinite(z)) throw new ArgumentOutOfRangeException(nameof(z), $"z must be positive and finite, got {z}");
        double n = trials, p = successes / n, z2 = z * z;
        double denominator = 1 + z2 / n;
        double centre = (p + z2 / (2 * n)) / denominator;
        double half = z / denominator * Math.Sqrt(p * (1 - p) / n + z2 / (4 * n * n));
        // at 0 or n successes that end is exactly 0 or 1 (the round-off would leave p̂ just outside)
        double low = successes == 0 ? 0 : centre - half, high = successes == trials ? 1 : centre + half;
        return new MetricEstimate(p, low, high, trials);
    }

    /// <summary>The share of true outcomes (e.g. images that follow their prompt) and its interval.</summary>
    public static MetricEstimate Of(IEnumerable<bool> outcomes, double z = Z95)
    {
        int successes = 0, trials = 0;
        foreach (var o in outcomes) { trials++; if (o) successes++; }
        return Of(successes, trials, z);
    }
}
