using HyperSd.Distillation.Metrics;
using Xunit.Abstractions;

namespace HyperSd.Distillation.Tests.Metrics;

public sealed class IntervalTests(ITestOutputHelper output)
{
    /// <summary>The Wilson interval written out independently: the roots in p of (p̂ − p)² = z²·p(1 − p)/n.</summary>
    static (double Low, double High) WilsonRoots(int k, int n, double z)
    {
        // n(p̂ − p)² − z²p(1 − p) = 0  ⇔  (n + z²)p² − (2k + z²)p + k²/n = 0
        double a = n + z * z, b = -(2.0 * k + z * z), c = (double)k * k / n;
        double root = Math.Sqrt(b * b - 4 * a * c);
        return ((-b - root) / (2 * a), (-b + root) / (2 * a));
    }

    [Theory]
    [InlineData(0, 10)]
    [InlineData(5, 10)]
    [InlineData(81, 263)]
    [InlineData(10, 10)]
    [InlineData(1, 29)]
    [InlineData(3, 1000)]
    public void Wilson_is_the_closed_form_score_interval(int k, int n)
    {
        foreach (var z in new[] { WilsonInterval.Z95, 1.0, 2.5758293035489 })
        {
            var interval = WilsonInterval.Of(k, n, z);
            var (low, high) = WilsonRoots(k, n, z);
            Assert.Equal((double)k / n, interval.Value, 15);
            Assert.Equal(low, interval.Low, 12);
            Assert.Equal(high, interval.High, 12);
            Assert.Equal(n, interval.N);
            Assert.True(interval.Low <= interval.Value && interval.Value <= interval.High, $"{k}/{n}: {interval}");
        }
    }

    [Theory]
    // Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (score, no
    // continuity correction): 81/263, 15/148, 0/20, 1/29; and the common classroom examples 0/10 and 5/10
    [InlineData(81, 263, 0.2553, 0.3662)]
    [InlineData(15, 148, 0.0624, 0.1605)]
    [InlineData(0, 20, 0.0, 0.1611)]
    [InlineData(1, 29, 0.0061, 0.1718)]
    [InlineData(0, 10, 0.0, 0.2775)]
    [InlineData(5, 10, 0.2366, 0.7634)]
    public void Wilson_reproduces_published_95_percent_intervals(int k, int n, double low, double high)
    {
        var interval = WilsonInterval.Of(k, n);
        Assert.Equal(low, interval.Low, 4);
        Assert.Equal(high, interval.High, 4);
    }

    [Fact]
    public void Wilson_counts_outcomes_and_rejects_impossible_counts()
    {
        Assert.Equal(WilsonInterval.Of(2, 5), WilsonInterval.Of([true, false, true, false, false]));
        Assert.Throws<ArgumentOutOfRangeException>(() => WilsonInterval.Of(0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => WilsonInterval.Of(6, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => WilsonInterval.Of(-1, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => WilsonInterval.Of(1, 5, z: 0));
    }

    /// <summary>Binomial coverage, exactly: the probability under Binomial(n, p) of the counts whose interval holds p.</summary>
    static double ExactWilsonCoverage(int n, double p)
    {
        double coverage = 0, logChoose = 0; // log C(n, k), updated in k
        for (int k = 0; k <= n; k++)
        {
            if (k > 0) logChoose += Math.Log(n - k + 1) - Math.Log(k);
            if (WilsonInterval.Of(k, n).Contains(p))
                coverage += Math.Exp(logChoose + k * Math.Log(p) + (n - k) * Math.Log(1 - p));
        }
        return coverage;
    }

    [Fact]
    public void Wilson_covers_a_Bernoulli_p_in_about_95_percent_of_seeded_trials()
    {
        // p drawn uniformly from [0.1, 0.9] per trial, n = 50 draws: Wilson's coverage oscillates with p (Brown, Cai
        // and DasGupta 2001) but averages 0.951 over this range, so the trial count sets the tolerance
        const int trials = 4000, n = 50;
        var random = new Random(20240612);
        int covered = 0;
        for (int trial = 0; trial < trials; trial++)
        {
            double p = 0.1 + 0.8 * random.NextDouble();
            int successes = 0;
            for (int i = 0; i < n; i++) if (random.NextDouble() < p) successes++;
            if (WilsonInterval.Of(successes, n).Contains(p)) covered++;
        }
        double coverage = (double)covered / trials, tolerance = 4 * Math.Sqrt(0.95 * 0.05 / trials);
        output.WriteLine($"Wilson coverage over {trials} trials: {coverage:F4} (0.95 ± {tolerance:F4})");
        Assert.InRange(coverage, 0.95 - tolerance, 0.95 + tolerance);

        // and at fixed p, exactly: never far below nominal where the normal approximation is reasonable (n·p ≥ 5)
        foreach (var p in new[] { 0.1, 0.2, 0.3, 0.4, 0.5, 0.7 })
        {
            double exact = ExactWilsonCoverage(n, p);
            output.WriteLine($"exact coverage at n = {n}, p = {p}: {exact:F4}");
            Assert.InRange(exact, 0.92, 0.98);
        }
    }

    [Theory]
    // Student's t 0.975 quantiles from the standard tables (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
    [InlineData(4, 2.776445)]
    [InlineData(9, 2.262157)]
    [InlineData(29, 2.045230)]
    [InlineData(99, 1.984217)]
    public void Student_t_quantiles_match_the_tables(int df, double expected)
    {
        Assert.Equal(expected, StudentT.Quantile(0.975, df), 1e-6);
        Assert.Equal(-expected, StudentT.Quantile(0.025, df), 1e-6);
    }

    [Fact]
    public void Student_t_matches_its_closed_forms_and_tends_to_the_normal()
    {
        foreach (var p in new[] { 0.6, 0.9, 0.975, 0.995 })
        {
            // ν = 1 is Cauchy: tan(π(p − ½)); ν = 2: (2p − 1)/√(2p(1 − p))
            Assert.Equal(Math.Tan(Math.PI * (p - 0.5)), StudentT.Quantile(p, 1), 9);
            Assert.Equal((2 * p - 1) / Math.Sqrt(2 * p * (1 - p)), StudentT.Quantile(p, 2), 9);
            Assert.Equal(p, StudentT.Cdf(StudentT.Quantile(p, 7.5), 7.5), 12);
        }
        Assert.Equal(WilsonInterval.Z95, StudentT.Quantile(0.975, 1e7), 5);
        Assert.Equal(0.5, StudentT.Cdf(0, 3), 15);
    }

    [Fact]
    public void The_redraw_interval_is_mean_plus_minus_t_times_the_standard_error()
    {
        double[] values = [412, 398, 431, 405, 420];
        var interval = RedrawInterval.Of(values);
        double mean = values.Average(), s = Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / 4);
        Assert.Equal(mean, interval.Value, 12);
        Assert.Equal(mean - 2.776445 * s / Math.Sqrt(5), interval.Low, 4);
        Assert.Equal(mean + 2.776445 * s / Math.Sqrt(5), interval.High, 4);
        Assert.Equal(5, interval.N);
        Assert.Equal("413 [397, 429]", interval.ToString());
        Assert.Throws<ArgumentException>(() => RedrawInterval.Of([412]));
        Assert.Throws<ArgumentException>(() => RedrawInterval.Of([412, double.NaN]));
        Assert.Throws<ArgumentOutOfRangeException>(() => RedrawInterval.Of(values, confidence: 1));
    }

    static double Gaussian(Random random) => // Box–Muller
        Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

    [Fact]
    public void The_redraw_interval_covers_a_Gaussian_mean_in_95_percent_of_seeded_trials_and_a_normal_one_does_not()
    {
        // five re-draws per trial: the t quantile (2.78) is what makes the interval cover; the normal's 1.96 covers ~88 %
        const int trials = 4000, redraws = 5;
        const double mu = 412, sigma = 15;
        var random = new Random(7);
        int covered = 0, coveredByZ = 0;
        for (int trial = 0; trial < trials; trial++)
        {
            var values = Enumerable.Range(0, redraws).Select(_ => mu + sigma * Gaussian(random)).ToArray();
            var interval = RedrawInterval.Of(values);
            if (interval.Contains(mu)) covered++;
            double zHalf = interval.HalfWidth / StudentT.Quantile(0.975, redraws - 1) * WilsonInterval.Z95;
            if (Math.Abs(interval.Value - mu) <= zHalf) coveredByZ++;
        }
        double coverage = (double)covered / trials, byZ = (double)coveredByZ / trials;
        double tolerance = 4 * Math.Sqrt(0.95 * 0.05 / trials);
        output.WriteLine($"t-interval coverage {coverage:F4} (0.95 ± {tolerance:F4}); with z instead of t {byZ:F4}");
        Assert.InRange(coverage, 0.95 - tolerance, 0.95 + tolerance);
        Assert.True(byZ < 0.95 - tolerance, $"the normal quantile covered {byZ}: the test cannot tell t from z");
    }

    [Fact]
    public void Estimates_print_with_the_digits_their_interval_supports()
    {
        Assert.Equal("412 [398, 426]", new MetricEstimate(412.3, 398.1, 426.4, 5).ToString());
        Assert.Equal("0.308 [0.255, 0.366]", WilsonInterval.Of(81, 263).ToString());
        Assert.Equal("0.00120 [0.00090, 0.00150]", new MetricEstimate(0.0012, 0.0009, 0.0015, 100).ToString());
        Assert.Equal("1 [1, 1]", new MetricEstimate(1, 1, 1, 3).ToString());
    }
}
