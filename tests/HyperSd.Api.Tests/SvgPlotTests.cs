using System.Globalization;
using System.Xml.Linq;
using HyperSd.Api.Pages;

namespace HyperSd.Api.Tests;

public sealed class SvgPlotTests
{
    static readonly XNamespace Svg = "http://www.w3.org/2000/svg";

    [Fact]
    public void Each_series_is_a_line_through_its_points_on_a_log2_step_axis_with_labels_encoded()
    {
        var markup = SvgPlot.Render("fd", lowerIsBetter: true,
        [
            new PlotSeries("teacher · <ddim>", [(1, 480.5), (2, 434.4), (4, 371.7), (8, 330.2)]),
            new PlotSeries("k2 & k4", [(2, 471.0), (4, 343.2)], Color: 1, Dash: 1),
        ]);
        var svg = XElement.Parse(markup.Value); // well-formed XML: every label encoded
        Assert.Equal("fd", svg.Attribute("data-metric")?.Value);
        Assert.Contains("lower is better", svg.Element(Svg + "title")!.Value);
        var lines = svg.Elements(Svg + "g").Select(g => (Label: g.Attribute("data-label")!.Value,
            Points: g.Element(Svg + "polyline")!.Attribute("points")!.Value.Split(' ')
                .Select(p => p.Split(',').Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray()).ToList())).ToList();
        Assert.Equal(["teacher · <ddim>", "k2 & k4"], lines.Select(l => l.Label));
        var teacher = lines[0].Points;
        Assert.Equal(4, teacher.Count);
        // 1, 2, 4, 8 evenly spaced; falling values go down the page less and less (y grows downwards)
        var dx = teacher.Zip(teacher.Skip(1), (a, b) => b[0] - a[0]).ToList();
        Assert.All(dx, d => Assert.InRange(d, dx[0] - 0.2, dx[0] + 0.2)); // coordinates are rounded to 0.1
        Assert.True(teacher.Zip(teacher.Skip(1)).All(p => p.Second[1] > p.First[1]));
        // the second series shares the x positions of 2 and 4 steps
        Assert.Equal([teacher[1][0], teacher[2][0]], lines[1].Points.Select(p => p[0]));
        Assert.Equal("6 3", svg.Elements(Svg + "g").Last().Element(Svg + "polyline")!.Attribute("stroke-dasharray")!.Value);
    }

    [Fact]
    public void A_point_with_an_interval_gets_an_error_bar_through_it_and_the_axis_holds_the_bar()
    {
        var svg = XElement.Parse(SvgPlot.Render("adherence", lowerIsBetter: false,
        [
            new PlotSeries("k4 · tcd", [new(1, 0.45, 0.36, 0.53), (2, 0.50), new(4, 0.60, 0.10, 0.95)]),
        ]).Value);
        var series = svg.Element(Svg + "g")!;
        var bars = series.Elements(Svg + "path").Where(p => p.Attribute("class")?.Value == "error-bar").ToList();
        Assert.Equal(2, bars.Count); // the point without an interval has none
        var dots = series.Elements(Svg + "circle").ToList();
        foreach (var (bar, dot) in new[] { (bars[0], dots[0]), (bars[1], dots[2]) })
        {
            // M x-3,yLow H x+3 M x,yLow V yHigh M x-3,yHigh H x+3: the bar's x is the dot's, the dot between its ends
            var n = System.Text.RegularExpressions.Regex.Matches(bar.Attribute("d")!.Value, @"-?\d+(\.\d+)?")
                .Select(m => double.Parse(m.Value, CultureInfo.InvariantCulture)).ToList();
            double Attr(string name) => double.Parse(dot.Attribute(name)!.Value, CultureInfo.InvariantCulture);
            Assert.Equal(Attr("cx"), n[3], 1);
            Assert.InRange(Attr("cy"), n[5], n[4]); // y grows downwards: the high end is above
        }
        // 0.10 to 0.95 lies on the axis (0 to 1), not beyond the plot
        var axis = svg.Elements(Svg + "text").Where(t => t.Attribute("class")?.Value == "tick").Select(t => t.Value).ToList();
        Assert.Contains("0", axis);
        Assert.Contains("1", axis);
        Assert.Contains("0.45 [0.36, 0.53] at 1 steps", dots[0].Element(Svg + "title")!.Value);
    }

    [Theory]
    [InlineData(0.12, 0.87, 0, 1)]
    [InlineData(330.2, 480.5, 300, 500)]
    [InlineData(400, 400, 380, 420)]
    public void The_value_axis_covers_the_values_with_rounded_ticks(double min, double max, double lo, double hi)
    {
        var (axisMin, axisMax, ticks) = SvgPlot.Axis(min, max);
        Assert.Equal(lo, axisMin, 9);
        Assert.Equal(hi, axisMax, 9);
        Assert.Equal(axisMin, ticks[0], 9);
        Assert.Equal(axisMax, ticks[^1], 9);
        Assert.InRange(ticks.Count, 3, 11);
    }

    [Fact]
    public void A_plot_without_values_says_so()
    {
        Assert.Contains("no values", SvgPlot.Render("adherence", false, [new PlotSeries("x", [(1, double.NaN)])]).Value);
    }
}
