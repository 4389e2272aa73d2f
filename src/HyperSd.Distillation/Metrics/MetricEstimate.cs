using System.Globalization;

namespace HyperSd.Distillation.Metrics;

/// <summary>
/// A measured value with its interval: <see cref="Low"/> ≤ <see cref="Value"/> ≤ <see cref="High"/> for the intervals
/// made here, and <see cref="N"/>, what the interval rests on (trials for <see cref="WilsonInterval"/>, independent
/// re-draws for <see cref="RedrawInterval"/>, subsets for <see cref="KernelInceptionDistance"/>).
/// </summary>
public sealed record MetricEstimate(double Value, double Low, double High, int N)
{
    public double HalfWidth => (High - Low) / 2;

    public bool Contains(double x) => x >= Low && x <= High;

    /// <summary>"412 [398, 426]": as many decimals as give the half-width two significant digits.</summary>
    public override string ToString()
    {
        double half = HalfWidth;
        if (!double.IsFinite(half) || half <= 0)
            return string.Create(CultureInfo.InvariantCulture, $"{Value:G4} [{Low:G4}, {High:G4}]");
        int decimals = Math.Clamp(1 - (int)Math.Floor(Math.Log10(half)), 0, 12);
        string Format(double x) => x.ToString("F" + decimals, CultureInfo.InvariantCulture);
        return $"{Format(Value)} [{Format(Low)}, {Format(High)}]";
    }
}
