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
            throw new ArgumentException($"feature statistics disagree: mean [{string.Join(", ", a.Mean.shape)}] vs [{string.Join(", ", b.Mean.shape)}], " +
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

    /// <summary>V diag(√λ) Vᵀ of a symmetric positive semi-definite matrix (round-off negative eigenvalues → 0).</summary>
    static Tensor SymmetricSqrt(Tensor matrix)
    {
        var (values, vectors) = linalg.eigh((matrix + matrix.T) / 2);
        return (vectors * values.clamp_min(0).sqrt()).matmul(vectors.T);
    }
}
