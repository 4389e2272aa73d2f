using static TorchSharp.torch;

namespace HyperSd.Distillation.Metrics;

/// <summary>Mean and covariance (float64, CPU) of a feature set, what the Fréchet distance compares; reference
/// statistics can be computed once and reused.</summary>
public sealed record FeatureStatistics(Tensor Mean, Tensor Covariance) : IDisposable
{
    /// <summary>Statistics of features [N, D] (N ≥ 2); the covariance is the unbiased one, as numpy's <c>cov</c>.</summary>
    public static FeatureStatistics Of(Tensor features)
    {
        if (features.dim() != 2 || features.shape[0] < 2)
            throw new ArgumentException($"features must be [N, D] with N ≥ 2, got [{string.Join(", ", features.shape)}]");
        using var scope = NewDisposeScope();
        var x = features.to(ScalarType.Float64, CPU);
        var mean = x.mean([0]);
        var centred = x - mean;
        var covariance = centred.T.matmul(centred) / (x.shape[0] - 1);
        return new FeatureStatistics(mean.MoveToOuterDisposeScope(), covariance.MoveToOuterDisposeScope());
    }

    public void Dispose()
    {
        Mean.Dispose();
        Covariance.Dispose();
    }
}

/// <summary>
/// The Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's; the toy
/// FID with <see cref="Toy.ToyRecognizer.Features"/>): |μ1 − μ2|² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½.
/// The square roots are symmetric ones from eigendecompositions in float64, so the trace term stays real.
/// </summary>
public static class FrechetDistance
{
    public static double Compute(Tensor features1, Tensor features2)
    {
        using var a = FeatureStatistics.Of(features1);
        using var b = FeatureStatistics.Of(features2);
        return Compute(a, b);
    }

    public static double Compute(FeatureStatistics a, FeatureStatistics b)
    {
        if (!a.Mean.shape.SequenceEqual(b.Mean.shape) || !a.Covariance.shape.SequenceEqual(b.Covariance.shape))
            throw new ArgumentException(
                $"feature statistics disagree: mean [{string.Join(", ", a.Mean.shape)}] vs [{string.Join(", ", b.Mean.shape)}], " +
                $"covariance [{string.Join(", ", a.Covariance.shape)}] vs [{string.Join(", ", b.Covariance.shape)}]");
        using var scope = NewDisposeScope();
        var (mu1, sigma1) = (a.Mean.to(ScalarType.Float64, CPU), a.Covariance.to(ScalarType.Float64, CPU));
        var (mu2, sigma2) = (b.Mean.to(ScalarType.Float64, CPU), b.Covariance.to(ScalarType.Float64, CPU));
        var diff = mu1 - mu2;
        var root1 = SymmetricSqrt(sigma1);
        var inner = root1.matmul(sigma2).matmul(root1);
        var traceSqrt = linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum();
        return (diff.dot(diff) + sigma1.trace() + sigma2.trace() - 2 * traceSqrt).item<double>();
    }

    /// <summary>
    /// The real-versus-real floor: the Fréchet distance between two disjoint random subsets of real features, of
    /// <paramref name="generatedCount"/> and <paramref name="referenceCount"/> rows, the sizes of the generated and the
    /// reference sets being compared. The Fréchet distance is biased upwards at finite sizes, so a generator cannot be
    /// told to be better than this; a model's distance is read against it. <paramref name="realFeatures"/> needs at
    /// least the two counts' sum of rows, none of them in the reference set the model is scored against (for an
    /// interval on the floor, call it on independent real sets and pass the values to <see cref="RedrawInterval"/>).
    /// </summary>
    public static double RealVersusReal(Tensor realFeatures, int generatedCount, int referenceCount, long seed = 0)
    {
        if (realFeatures.dim() != 2)
            throw new ArgumentException($"real features must be [N, D], got [{string.Join(", ", realFeatures.shape)}]");
        if (generatedCount < 2 || referenceCount < 2)
            throw new ArgumentOutOfRangeException(nameof(generatedCount),
                $"both sets need at least 2 rows, got {generatedCount} generated and {referenceCount} reference");
        long n = realFeatures.shape[0];
        if (n < (long)generatedCount + referenceCount)
            throw new ArgumentException($"the real-versus-real floor needs {generatedCount} + {referenceCount} disjoint real rows, " +
                                        $"got {n}");
        using var scope = NewDisposeScope();
        using var generator = new Generator((ulong)seed, CPU);
        var rows = randperm(n, generator: generator).to(realFeatures.device);
        var first = realFeatures.index_select(0, rows[..generatedCount]);
        var second = realFeatures.index_select(0, rows[generatedCount..(generatedCount + referenceCount)]);
        return Compute(first, second);
    }

    /// <summary>V diag(√λ) Vᵀ of a symmetric positive semi-definite matrix (round-off negative eigenvalues → 0).</summary>
    static Tensor SymmetricSqrt(Tensor matrix)
    {
        var (values, vectors) = linalg.eigh((matrix + matrix.T) / 2);
        return (vectors * values.clamp_min(0).sqrt()).matmul(vectors.T);
    }
}
