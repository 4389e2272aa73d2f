using HyperSd.Distillation.Metrics;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Metrics;

public sealed class FrechetDistanceTests
{
    static FeatureStatistics Gaussian(double[] mean, double[,] covariance) =>
        new(tensor(mean, ScalarType.Float64), tensor(covariance, ScalarType.Float64));

    [Fact]
    public void DiagonalGaussiansGiveTheClosedForm()
    {
        double[] mu1 = [1, -2, 0.5], mu2 = [0, 1, 0.5], s1 = [1, 2, 0.5], s2 = [3, 0.5, 0.5];
        using var a = Gaussian(mu1, Diagonal(s1.Select(s => s * s).ToArray()));
        using var b = Gaussian(mu2, Diagonal(s2.Select(s => s * s).ToArray()));
        double expected = mu1.Zip(mu2).Sum(p => (p.First - p.Second) * (p.First - p.Second))
                          + s1.Zip(s2).Sum(p => (p.First - p.Second) * (p.First - p.Second));
        Assert.Equal(expected, FrechetDistance.Compute(a, b), 10);
        Assert.Equal(expected, FrechetDistance.Compute(b, a), 10);
    }

    [Fact]
    public void NonCommutingCovariancesGiveTheTwoByTwoClosedForm()
    {
        // for 2×2 positive definite M: tr √M = √(tr M + 2 √det M), with M = Σ1^½ Σ2 Σ1^½:
        // tr M = tr Σ1Σ2, det M = det Σ1 det Σ2
        double[,] c1 = { { 2, 0.8 }, { 0.8, 1 } }, c2 = { { 1, -0.5 }, { -0.5, 3 } };
        using var a = Gaussian([0.3, 0], c1);
        using var b = Gaussian([0, 0.4], c2);
        double trace12 = c1[0, 0] * c2[0, 0] + c1[0, 1] * c2[1, 0] + c1[1, 0] * c2[0, 1] + c1[1, 1] * c2[1, 1];
        double det1 = c1[0, 0] * c1[1, 1] - c1[0, 1] * c1[1, 0], det2 = c2[0, 0] * c2[1, 1] - c2[0, 1] * c2[1, 0];
        double expected = 0.3 * 0.3 + 0.4 * 0.4 + 3 + 4 - 2 * Math.Sqrt(trace12 + 2 * Math.Sqrt(det1 * det2));
        Assert.Equal(expected, FrechetDistance.Compute(a, b), 10);
    }

    [Theory]
    [InlineData(500, 16)]
    [InlineData(10, 32)] // fewer samples than dimensions: singular covariances
    public void IdenticalSetsAreAtDistanceZero(int n, int d)
    {
        var generator = new Generator(11, CPU);
        using var features = randn([n, d], generator: generator) * 3 + 1;
        // round-off only: near-zero eigenvalues lose most of their digits under the square root
        Assert.InRange(FrechetDistance.Compute(features, features), -1e-4, 1e-4);
        using var shuffled = features[randperm(n, generator: generator)];
        Assert.InRange(FrechetDistance.Compute(features, shuffled), -1e-4, 1e-4);
    }

    [Fact]
    public void SampledGaussiansApproachTheirDistance()
    {
        var generator = new Generator(5, CPU);
        using var x = randn([20000, 4], generator: generator);
        using var y = randn([20000, 4], generator: generator) * 2 + 1;
        // |μ1 − μ2|² = 4, Σ (σ1 − σ2)² = 4
        Assert.InRange(FrechetDistance.Compute(x, y), 7.8, 8.2);
    }

    [Fact]
    public void RejectsMismatchedFeatureSets()
    {
        using var a = zeros(10, 4);
        using var b = zeros(10, 5);
        Assert.Throws<ArgumentException>(() => FrechetDistance.Compute(a, b));
        using var one = zeros(1, 4);
        Assert.Throws<ArgumentException>(() => FeatureStatistics.Of(one));
    }

    [Fact]
    public void The_real_floor_compares_two_disjoint_real_sets_of_the_given_sizes()
    {
        var generator = new Generator(23, CPU);
        using var pool = randn([3000, 8], generator: generator);
        double small = FrechetDistance.RealVersusReal(pool, 100, 200, seed: 4);
        double large = FrechetDistance.RealVersusReal(pool, 1000, 2000, seed: 4);
        // one distribution: only the finite-sample bias, which shrinks as the sets grow
        Assert.True(small > large && large > 0, $"floor at 100/200 {small}, at 1000/2000 {large}");
        using var rows = randperm(3000, generator: new Generator(4, CPU));
        using var first = pool.index_select(0, rows[..100]);
        using var second = pool.index_select(0, rows[100..300]);
        Assert.Equal(FrechetDistance.Compute(first, second), small, 12);
        Assert.Throws<ArgumentException>(() => FrechetDistance.RealVersusReal(pool, 2000, 1001));
        Assert.Throws<ArgumentOutOfRangeException>(() => FrechetDistance.RealVersusReal(pool, 1, 10));
    }

    [Fact]
    public void A_bootstrap_resample_inflates_the_distance_that_fresh_redraws_measure()
    {
        // why RedrawInterval takes independent re-draws: resampling one set with replacement repeats rows, which
        // shrinks its spread, so the bootstrap's distances sit above what fresh sets of the same size give
        var generator = new Generator(29, CPU);
        using var reference = randn([2000, 8], generator: generator);
        using var sample = randn([200, 8], generator: generator);
        var fresh = new List<double>();
        var bootstrap = new List<double>();
        for (int r = 0; r < 20; r++)
        {
            using var redraw = randn([200, 8], generator: generator);
            fresh.Add(FrechetDistance.Compute(redraw, reference));
            using var resampled = sample.index_select(0, randint(0, 200, [200], generator: generator));
            bootstrap.Add(FrechetDistance.Compute(resampled, reference));
        }
        var freshInterval = RedrawInterval.Of(fresh);
        Assert.True(bootstrap.Average() > freshInterval.High, $"bootstrap mean {bootstrap.Average()}, re-draws {freshInterval}");
    }

    static double[,] Diagonal(double[] values)
    {
        var m = new double[values.Length, values.Length];
        for (int i = 0; i < values.Length; i++) m[i, i] = values[i];
        return m;
    }
}
