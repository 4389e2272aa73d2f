using System.Globalization;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Metrics;

/// <summary>
/// A kernel inception distance: the mean of the subset estimates and its standard error.
/// <see cref="SubsetStd"/> is the spread of the subset estimates (what torchmetrics reports as kid_std);
/// <see cref="StandardError"/> is the standard error of <see cref="Value"/> (see <see cref="KernelInceptionDistance"/>).
/// </summary>
public sealed record KidEstimate(double Value, double StandardError, double SubsetStd, int Subsets, int SubsetSize)
{
    /// <summary>Value ± z·SE (95 % for the default z), as a <see cref="MetricEstimate"/> with N = the subsets.</summary>
    public MetricEstimate Interval(double z = WilsonInterval.Z95) =>
        new(Value, Value - z * StandardError, Value + z * StandardError, Subsets);

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Interval()} (SE {StandardError:G3}, {Subsets} subsets of {SubsetSize})");
}

/// <summary>
/// Kernel inception distance (Bińkowski et al. 2018, "Demystifying MMD GANs"): the unbiased estimate of the squared
/// maximum mean discrepancy between two feature sets under the cubic polynomial kernel k(x, y) = (x·y/d + 1)³, d the
/// feature width. Unlike the Fréchet distance its estimator is unbiased, so it is comparable across sample sizes and
/// is ≈ 0 (possibly negative) for two samples of one distribution.
/// <para>As torchmetrics and clean-fid compute it: <c>subsets</c> estimates, each on m features drawn without
/// replacement from each set, averaged. The standard error accounts for both sources of variation: a subset's estimate
/// varies about the full-sample estimate (its variance v over subsets given the data is observed), and the full-sample
/// estimate varies with the data. For the first-order (non-degenerate) term of a U-statistic, v ≈ a·(1/m − 1/N) and
/// the full-sample variance is a/N, so it is v·m/(N − m); at a degenerate point (equal distributions) that ratio is
/// m²/(N² − m²), smaller, so the estimate is conservative there. SE² = v·(m/(N − m) + 1/subsets), N the smaller set.
/// The subset size must therefore stay below N (default min(1000, N/2)).</para>
/// </summary>
public static class KernelInceptionDistance
{
    public const int DefaultSubsets = 100, DefaultMaxSubsetSize = 1000;

    /// <summary>The cubic polynomial kernel matrix (x·yᵀ/d + 1)³ of rows [n, d] and [m, d].</summary>
    public static Tensor Kernel(Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        return (x.matmul(y.T) / x.shape[1] + 1).pow(3).MoveToOuterDisposeScope();
    }

    /// <summary>The unbiased MMD² estimate of features <paramref name="x"/> [n, d] and <paramref name="y"/> [m, d]
    /// (n, m ≥ 2): mean of k(xᵢ, xⱼ) over i ≠ j, plus the same for y, minus twice the mean of k(xᵢ, yⱼ) over all
    /// pairs.</summary>
    public static double UnbiasedMmd2(Tensor x, Tensor y)
    {
        Check(x, y);
        using var scope = NewDisposeScope();
        var (a, b) = (x.to(ScalarType.Float64, CPU), y.to(ScalarType.Float64, CPU));
        return UnbiasedMmd2Float64(a, b);
    }

    static double UnbiasedMmd2Float64(Tensor x, Tensor y)
    {
        using var scope = NewDisposeScope();
        double n = x.shape[0], m = y.shape[0];
        var kxx = Kernel(x, x);
        var kyy = Kernel(y, y);
        var kxy = Kernel(x, y);
        var withinX = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1));
        var withinY = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1));
        return (withinX + withinY - 2 * kxy.sum() / (n * m)).item<double>();
    }

    /// <summary>KID over <paramref name="subsets"/> random subsets of <paramref name="subsetSize"/> features from each
    /// set (default min(1000, N/2) but at least 2, N the smaller set; at most N − 1), drawn with a generator seeded by
    /// <paramref name="seed"/>.</summary>
    public static KidEstimate Compute(Tensor x, Tensor y, int subsets = DefaultSubsets, int? subsetSize = null, long seed = 0)
    {
        Check(x, y);
        long n = Math.Min(x.shape[0], y.shape[0]);
        int m = subsetSize ?? (int)Math.Max(2, Math.Min(DefaultMaxSubsetSize, n / 2));
        if (n < 3) throw new ArgumentException($"KID needs at least 3 features in each set, got {x.shape[0]} and {y.shape[0]}");
        if (m < 2 || m >= n)
            throw new ArgumentOutOfRangeException(nameof(subsetSize),
                $"the subset size must be in [2, {n - 1}] (below the smaller set's {n} features), got {m}");
        if (subsets < 2) throw new ArgumentOutOfRangeException(nameof(subsets), $"KID needs at least 2 subsets, got {subsets}");
        using var scope = NewDisposeScope();
        using var generator = new Generator((ulong)seed, CPU);
        var (a, b) = (x.to(ScalarType.Float64, CPU), y.to(ScalarType.Float64, CPU));
        var estimates = new double[subsets];
        for (int s = 0; s < subsets; s++)
        {
            using var inner = NewDisposeScope();
            var rowsX = randperm(a.shape[0], generator: generator)[..m];
            var rowsY = randperm(b.shape[0], generator: generator)[..m];
            estimates[s] = UnbiasedMmd2Float64(a.index_select(0, rowsX), b.index_select(0, rowsY));
        }
        double mean = estimates.Average();
        double variance = estimates.Sum(e => (e - mean) * (e - mean)) / (subsets - 1);
        double se = Math.Sqrt(variance * ((double)m / (n - m) + 1.0 / subsets));
        return new KidEstimate(mean, se, Math.Sqrt(variance), subsets, m);
    }

    static void Check(Tensor x, Tensor y)
    {
        if (x.dim() != 2 || y.dim() != 2 || x.shape[1] != y.shape[1] || x.shape[0] < 2 || y.shape[0] < 2)
            throw new ArgumentException("KID needs feature sets [N, D] of one width with N ≥ 2, got " +
                                        $"[{string.Join(", ", x.shape)}] and [{string.Join(", ", y.shape)}]");
    }
}
