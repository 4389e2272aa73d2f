using HyperSd.Distillation.Metrics;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Metrics;

public sealed class KernelInceptionDistanceTests(ITestOutputHelper output)
{
    static double[][] Rows(Tensor t)
    {
        using var d = t.to(ScalarType.Float64);
        var flat = d.data<double>().ToArray();
        int width = (int)t.shape[1];
        return Enumerable.Range(0, (int)t.shape[0]).Select(i => flat.AsSpan(i * width, width).ToArray()).ToArray();
    }

    static double K(double[] a, double[] b)
    {
        double dot = 0;
        for (int i = 0; i < a.Length; i++) dot += a[i] * b[i];
        double v = dot / a.Length + 1;
        return v * v * v;
    }

    /// <summary>MMD² pair by pair: the unbiased estimate (i ≠ j within each set), or with <paramref name="biased"/>
    /// the V-statistic that keeps the i = j terms.</summary>
    static double BruteForceMmd2(double[][] x, double[][] y, bool biased = false)
    {
        double xx = 0, yy = 0, xy = 0;
        for (int i = 0; i < x.Length; i++)
            for (int j = 0; j < x.Length; j++)
                if (biased || i != j) xx += K(x[i], x[j]);
        for (int i = 0; i < y.Length; i++)
            for (int j = 0; j < y.Length; j++)
                if (biased || i != j) yy += K(y[i], y[j]);
        foreach (var a in x)
            foreach (var b in y)
                xy += K(a, b);
        double n = x.Length, m = y.Length;
        return biased
            ? xx / (n * n) + yy / (m * m) - 2 * xy / (n * m)
            : xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m);
    }

    [Fact]
    public void The_unbiased_estimate_is_the_pairwise_sum()
    {
        var g = new Generator(3, CPU);
        using var x = randn([30, 5], generator: g);
        using var y = randn([25, 5], generator: g) * 1.5 + 0.3;
        double expected = BruteForceMmd2(Rows(x), Rows(y));
        double actual = KernelInceptionDistance.UnbiasedMmd2(x, y);
        output.WriteLine($"MMD² {actual} (pairwise {expected})");
        Assert.Equal(expected, actual, 1e-10 * Math.Abs(expected));
        Assert.Equal(expected, KernelInceptionDistance.UnbiasedMmd2(y, x), 1e-10 * Math.Abs(expected));
        using var kernel = KernelInceptionDistance.Kernel(x, y);
        Assert.Equal(K(Rows(x)[4], Rows(y)[7]), kernel[4, 7].item<float>(), 1e-4);
    }

    [Fact]
    public void The_estimate_is_unbiased_where_the_V_statistic_is_not()
    {
        // 400 pairs of tiny samples of one distribution (MMD² = 0): the unbiased estimates average to 0 within their
        // standard error, the V-statistic's stay clearly positive
        const int replicates = 400;
        var g = new Generator(5, CPU);
        var unbiased = new double[replicates];
        var biased = new double[replicates];
        for (int r = 0; r < replicates; r++)
        {
            using var x = randn([8, 4], generator: g);
            using var y = randn([8, 4], generator: g);
            unbiased[r] = KernelInceptionDistance.UnbiasedMmd2(x, y);
            biased[r] = BruteForceMmd2(Rows(x), Rows(y), biased: true);
        }
        double mean = unbiased.Average(), se = Std(unbiased) / Math.Sqrt(replicates);
        double biasedMean = biased.Average(), biasedSe = Std(biased) / Math.Sqrt(replicates);
        output.WriteLine($"mean unbiased estimate {mean:G4} (SE {se:G3}); V-statistic {biasedMean:G4} (SE {biasedSe:G3})");
        Assert.InRange(mean, -4 * se, 4 * se);
        Assert.True(biasedMean > 10 * biasedSe, $"the V-statistic's mean {biasedMean} is not clearly positive (SE {biasedSe})");
    }

    static double Std(IReadOnlyList<double> values)
    {
        double mean = values.Average();
        return Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1));
    }

    [Fact]
    public void One_distribution_gives_zero_within_the_standard_error_and_a_shift_gives_clearly_more()
    {
        var g = new Generator(11, CPU);
        using var reference = randn([800, 16], generator: g);
        using var same = randn([600, 16], generator: g);
        using var shifted = randn([600, 16], generator: g) + 0.25;
        var kidSame = KernelInceptionDistance.Compute(reference, same, subsets: 50);
        var kidShifted = KernelInceptionDistance.Compute(reference, shifted, subsets: 50);
        output.WriteLine($"same distribution: {kidSame}\nshifted by 0.25: {kidShifted}");
        Assert.Equal(300, kidSame.SubsetSize); // min(1000, N/2) of the smaller set
        Assert.InRange(kidSame.Value, -2 * kidSame.StandardError, 2 * kidSame.StandardError);
        Assert.True(kidShifted.Value > 5 * kidShifted.StandardError, $"shifted: {kidShifted}");
        Assert.True(kidShifted.Interval().Low > kidSame.Interval().High);
        // seeded: the same subsets again
        Assert.Equal(kidSame, KernelInceptionDistance.Compute(reference, same, subsets: 50));
        Assert.NotEqual(kidSame.Value, KernelInceptionDistance.Compute(reference, same, subsets: 50, seed: 1).Value);
    }

    [Fact]
    public void The_standard_error_matches_the_spread_over_independent_redraws()
    {
        // 60 independent data sets: the reported SE should be about the actual spread of the KID values (within the
        // ~±20 % an SD estimated from 60 values allows, and on the conservative side at equal distributions)
        const int replicates = 60;
        var g = new Generator(17, CPU);
        foreach (var shift in new[] { 0.0, 0.3 })
        {
            var values = new double[replicates];
            var errors = new double[replicates];
            int covered = 0;
            for (int r = 0; r < replicates; r++)
            {
                using var x = randn([300, 8], generator: g);
                using var y = randn([300, 8], generator: g) + shift;
                var kid = KernelInceptionDistance.Compute(x, y, subsets: 40, seed: r);
                (values[r], errors[r]) = (kid.Value, kid.StandardError);
                if (shift == 0 && kid.Interval().Contains(0)) covered++;
            }
            double spread = Std(values), reported = Math.Sqrt(errors.Average(e => e * e));
            output.WriteLine($"shift {shift}: mean KID {values.Average():G4}, spread over re-draws {spread:G4}, reported SE {reported:G4}" +
                             (shift == 0 ? $", 0 covered in {covered}/{replicates}" : ""));
            Assert.InRange(reported / spread, shift == 0 ? 0.8 : 0.7, shift == 0 ? 3.0 : 1.4);
            if (shift == 0) Assert.True(covered >= 0.9 * replicates, $"0 covered in only {covered} of {replicates}");
        }
    }

    [Fact]
    public void Rejects_sets_it_cannot_measure()
    {
        using var a = zeros(10, 4);
        using var b = zeros(10, 5);
        Assert.Throws<ArgumentException>(() => KernelInceptionDistance.UnbiasedMmd2(a, b));
        using var c = zeros(10, 4);
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelInceptionDistance.Compute(a, c, subsetSize: 10)); // = N
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelInceptionDistance.Compute(a, c, subsets: 1));
    }
}
