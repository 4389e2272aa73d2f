namespace HyperSd.Distillation.Metrics;

/// <summary>Student's t distribution with ν degrees of freedom: the distribution function through the regularised
/// incomplete beta function, F(t) = 1 − ½·I_{ν/(ν+t²)}(ν/2, ½) for t ≥ 0, and its quantile by bisection.</summary>
public static class StudentT
{
    public static double Cdf(double t, double degreesOfFreedom)
    {
        CheckDegrees(degreesOfFreedom);
        if (double.IsNaN(t)) return double.NaN;
        if (double.IsPositiveInfinity(t)) return 1;
        if (double.IsNegativeInfinity(t)) return 0;
        double nu = degreesOfFreedom;
        double tail = 0.5 * RegularizedIncompleteBeta(nu / (nu + t * t), nu / 2, 0.5);
        return t >= 0 ? 1 - tail : tail;
    }

    /// <summary>The t with <see cref="Cdf"/>(t) = <paramref name="p"/>, to about 1e-12.</summary>
    public static double Quantile(double p, double degreesOfFreedom)
    {
        CheckDegrees(degreesOfFreedom);
        if (!(p > 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), $"p must be in (0, 1), got {p}");
        if (p < 0.5) return -Quantile(1 - p, degreesOfFreedom);
        if (p == 0.5) return 0;
        double low = 0, high = 1;
        while (Cdf(high, degreesOfFreedom) < p) { low = high; high *= 2; }
        for (int i = 0; i < 200 && high - low > 1e-13 * Math.Max(1, high); i++)
        {
            double mid = (low + high) / 2;
            if (Cdf(mid, degreesOfFreedom) < p) low = mid; else high = mid;
        }
        return (low + high) / 2;
    }

    static void CheckDegrees(double nu)
    {
        if (!(nu > 0) || double.IsNaN(nu))
            throw new ArgumentOutOfRangeException(nameof(nu), $"degrees of freedom must be positive, got {nu}");
    }

    /// <summary>I_x(a, b) by its continued fraction (modified Lentz), on the side of x where it converges fast.</summary>
    internal static double RegularizedIncompleteBeta(double x, double a, double b)
    {
        if (x <= 0) return 0;
        if (x >= 1) return 1;
        double logFront = a * Math.Log(x) + b * Math.Log(1 - x) - (LogGamma(a) + LogGamma(b) - LogGamma(a + b));
        if (x > (a + 1) / (a + b + 2)) return 1 - Math.Exp(logFront) * BetaContinuedFraction(1 - x, b, a) / b;
        return Math.Exp(logFront) * BetaContinuedFraction(x, a, b) / a;
    }

    static double BetaContinuedFraction(double x, double a, double b)
    {
        const double Tiny = 1e-300, Epsilon = 1e-16;
        double c = 1, d = 1 - (a + b) * x / (a + 1);
        d = 1 / (Math.Abs(d) < Tiny ? Tiny : d);
        double h = d;
        for (int m = 1; m <= 10_000; m++)
        {
            // the even step d_{2m} = m(b − m)x / ((a + 2m − 1)(a + 2m)), then the odd one
            // d_{2m+1} = −(a + m)(a + b + m)x / ((a + 2m)(a + 2m + 1))
            for (int odd = 0; odd < 2; odd++)
            {
                double coefficient = odd == 0
                    ? m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
                    : -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
                d = 1 + coefficient * d;
                d = 1 / (Math.Abs(d) < Tiny ? Tiny : d);
                c = 1 + coefficient / c;
                if (Math.Abs(c) < Tiny) c = Tiny;
                double delta = c * d;
                h *= delta;
                if (odd == 1 && Math.Abs(delta - 1) < Epsilon) return h;
            }
        }
        throw new ArithmeticException($"the incomplete beta continued fraction did not converge (x = {x}, a = {a}, b = {b})");
    }

    /// <summary>ln Γ(x) for x &gt; 0: Lanczos' approximation (g = 7, 9 terms), reflected below ½.</summary>
    internal static double LogGamma(double x)
    {
        if (x < 0.5) return Math.Log(Math.PI / Math.Abs(Math.Sin(Math.PI * x))) - LogGamma(1 - x);
        x -= 1;
        double sum = Lanczos[0];
        for (int i = 1; i < Lanczos.Length; i++) sum += Lanczos[i] / (x + i);
        double t = x + 7.5;
        return 0.5 * Math.Log(2 * Math.PI) + (x + 0.5) * Math.Log(t) - t + Math.Log(sum);
    }

    static readonly double[] Lanczos =
    [
        0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
        12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
    ];
}
