namespace HyperSd.Api.Pages;

/// <summary>One line of a plot: a metric's value at each step count. <see cref="Color"/> and <see cref="Dash"/> index the
/// plot's palettes (the comparison page colours by run and dashes by model and sampler).</summary>
public sealed record PlotSeries(string Label, IReadOnlyList<PlotPoint> Points, int Color = 0, int Dash = 0);

/// <summary>A value at a step count, with its 95 % interval where the metric has one (drawn as an error bar).</summary>
public readonly record struct PlotPoint(int Steps, double Value, double? Low = null, double? High = null)
{
    public static implicit operator PlotPoint((int Steps, double Value) p) => new(p.Steps, p.Value);

    /// <summary>The interval, when both ends are finite numbers.</summary>
    public (double Low, double High)? Interval =>
        Low is { } l && High is { } h && double.IsFinite(l) && double.IsFinite(h) ? (l, h) : null;
}

/// <summary>A metric against step count as an inline SVG, drawn on the server (no script, nothing fetched): step counts on
/// a log2 axis (1, 2, 4, 8 evenly spaced), values on a linear axis with rounded ticks, a legend on the right as wide and
/// as tall as its labels need; a point with an interval gets a vertical error bar.</summary>
public static class SvgPlot
{
    const int Left = 64, Top = 16, Bottom = 44, LegendRow = 18;
    const double PlotWidth = 360, PlotHeight = 240;

    // Okabe–Ito: told apart with the common colour-vision deficiencies
    static readonly string[] Colors = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442"];
    static readonly string[] Dashes = ["", "6 3", "2 3", "8 3 2 3", "1 5"];

    public static Markup Render(string metric, bool lowerIsBetter, IReadOnlyList<PlotSeries> series)
    {
        // about 6.2 px a character at 11 px: the legend's width (the 40 px before the text hold its line sample)
        var right = Math.Clamp(series.Select(s => s.Label.Length).DefaultIfEmpty(0).Max() * 6.2 + 56, 140, 480);
        var width = (int)Math.Ceiling(Left + PlotWidth + right);
        var height = (int)Math.Max(Top + PlotHeight + Bottom, Top + 8 + series.Count * LegendRow + 8);
        var points = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.Value) && p.Steps >= 1).ToList();
        var title = $"{metric} against steps ({(lowerIsBetter ? "lower" : "higher")} is better)";
        if (points.Count == 0) return Html.Of($"<p class=\"empty\">{title}: no values</p>");

        var steps = points.Select(p => p.Steps).Distinct().Order().ToList();
        double logMin = Math.Log2(steps[0]), logMax = Math.Log2(steps[^1]);
        // one step count alone sits in the middle
        double X(int s) => Left + (logMax > logMin ? (Math.Log2(s) - logMin) / (logMax - logMin) * PlotWidth : PlotWidth / 2);
        // the axis holds the error bars too, not only the values
        var (yMin, yMax, ticks) = Axis(points.Min(p => p.Interval?.Low ?? p.Value), points.Max(p => p.Interval?.High ?? p.Value));
        double Y(double v) => Top + (yMax - v) / (yMax - yMin) * PlotHeight;

        var grid = Html.Join(ticks, t => Html.Of(
            $"<line class=\"grid\" x1=\"{Left}\" x2=\"{Left + PlotWidth}\" y1=\"{Y(t):F1}\" y2=\"{Y(t):F1}\"/>" +
            $"<text class=\"tick\" x=\"{Left - 6}\" y=\"{Y(t) + 4:F1}\" text-anchor=\"end\">{t:G6}</text>"));
        var xTicks = Html.Join(steps, s => Html.Of(
            $"<text class=\"tick\" x=\"{X(s):F1}\" y=\"{Top + PlotHeight + 16}\" text-anchor=\"middle\">{s}</text>"));
        var lines = Html.Join(series.Select((s, i) => (s, i)), item =>
        {
            var (s, i) = item;
            var color = Colors[s.Color % Colors.Length];
            var dash = Dashes[s.Dash % Dashes.Length];
            var valid = s.Points.Where(p => double.IsFinite(p.Value) && p.Steps >= 1).OrderBy(p => p.Steps).ToList();
            var path = string.Join(" ", valid.Select(p => FormattableString.Invariant($"{X(p.Steps):F1},{Y(p.Value):F1}")));
            var bars = Html.Join(valid, p => p.Interval is { } e ? ErrorBar(X(p.Steps), Y(e.Low), Y(e.High), color) : Markup.Empty);
            var dots = Html.Join(valid, p =>
            {
                var interval = p.Interval is { } e ? FormattableString.Invariant($" [{e.Low:G6}, {e.High:G6}]") : "";
                return Html.Of($"<circle cx=\"{X(p.Steps):F1}\" cy=\"{Y(p.Value):F1}\" r=\"3.5\" fill=\"{color}\">" +
                               $"<title>{s.Label}: {p.Value:G6}{interval} at {p.Steps} steps</title></circle>");
            });
            double legendY = Top + 8 + i * LegendRow, legendX = Left + PlotWidth + 12;
            return Html.Of(
                $"<g class=\"series\" data-label=\"{s.Label}\">" +
                $"<polyline points=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>" +
                $"{bars}{dots}" +
                $"<line x1=\"{legendX}\" x2=\"{legendX + 28}\" y1=\"{legendY:F1}\" y2=\"{legendY:F1}\" stroke=\"{color}\" " +
                $"stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>" +
                $"<text class=\"legend\" x=\"{legendX + 34}\" y=\"{legendY + 4:F1}\">{s.Label}</text></g>");
        });
        return Html.Of(
            $"<svg class=\"plot\" data-metric=\"{metric}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" " +
            $"width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{title}\">" +
            $"<title>{title}</title>{grid}" +
            $"<line class=\"axis\" x1=\"{Left}\" x2=\"{Left}\" y1=\"{Top}\" y2=\"{Top + PlotHeight}\"/>" +
            $"<line class=\"axis\" x1=\"{Left}\" x2=\"{Left + PlotWidth}\" y1=\"{Top + PlotHeight}\" y2=\"{Top + PlotHeight}\"/>" +
            $"{xTicks}<text class=\"label\" x=\"{Left + PlotWidth / 2}\" y=\"{Top + PlotHeight + 36}\" " +
            $"text-anchor=\"middle\">steps</text>" +
            $"<text class=\"label\" transform=\"rotate(-90)\" x=\"{-(Top + PlotHeight / 2)}\" y=\"14\" " +
            $"text-anchor=\"middle\">{metric}</text>" +
            $"{lines}</svg>");
    }

    /// <summary>A vertical line from <paramref name="yLow"/> to <paramref name="yHigh"/> with short caps, solid whatever the
    /// series' dash.</summary>
    static Markup ErrorBar(double x, double yLow, double yHigh, string color) => Html.Of(
        $"<path class=\"error-bar\" d=\"M{x - 3:F1},{yLow:F1}H{x + 3:F1}M{x:F1},{yLow:F1}V{yHigh:F1}" +
        $"M{x - 3:F1},{yHigh:F1}H{x + 3:F1}\" stroke=\"{color}\" stroke-width=\"1.5\" fill=\"none\"/>");

    /// <summary>The value axis: bounds widened to whole multiples of a 1-2-5 tick step (about five ticks); a flat series
    /// gets a band around its value.</summary>
    public static (double Min, double Max, IReadOnlyList<double> Ticks) Axis(double min, double max)
    {
        if (max - min < 1e-12)
        {
            var pad = Math.Abs(min) > 1e-12 ? Math.Abs(min) * 0.05 : 1;
            (min, max) = (min - pad, max + pad);
        }
        var raw = (max - min) / 5;
        var magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        var step = new[] { 1.0, 2, 5, 10 }.Select(f => f * magnitude).First(s => s >= raw);
        var lo = Math.Floor(min / step) * step;
        var hi = Math.Ceiling(max / step) * step;
        var ticks = new List<double>();
        // rounded to the step's precision: 0.1 + 0.2 would print as 0.30000000000000004
        var decimals = Math.Clamp(-(int)Math.Floor(Math.Log10(step)), 0, 15);
        for (var t = lo; t <= hi + step / 2; t += step) ticks.Add(Math.Round(t, decimals));
        return (lo, hi, ticks);
    }
}
