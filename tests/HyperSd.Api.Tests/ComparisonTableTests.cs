using HyperSd.Api.Pages;
using HyperSd.Services.Runs;

namespace HyperSd.Api.Tests;

/// <summary>The compare page's table: every value with its interval, and a row's best in bold only where it stands apart.</summary>
public sealed class ComparisonTableTests
{
    static ComparisonRow Row(string metric, params (double? Value, double? Low, double? High)[] cells) => new("tscd-k4", "tcd", metric, 4,
        [.. cells.Select(c => c.Value)], [.. cells.Select(c => c.Low is { } l && c.High is { } h ? new MetricInterval(l, h) : null)]);

    [Fact]
    public void The_best_value_stands_apart_only_when_its_interval_overlaps_no_other()
    {
        // adherence: higher is better
        Assert.Equal(1, Row("adherence", (0.20, 0.14, 0.27), (0.45, 0.36, 0.53)).Best());
        Assert.Null(Row("adherence", (0.20, 0.14, 0.27), (0.25, 0.18, 0.33)).Best());
        // a neighbour without an interval is a point: it overlaps when it lies inside the best's interval
        Assert.Null(Row("adherence", (0.40, null, null), (0.45, 0.36, 0.53)).Best());
        Assert.Equal(1, Row("adherence", (0.30, null, null), (0.45, 0.36, 0.53)).Best());
        // and a best without an interval (a row stored before intervals were) is a point too: inside another's interval, not bold
        Assert.Null(Row("kid", (0.0100, null, null), (0.0150, 0.0080, 0.0220)).Best());
        Assert.Equal(0, Row("kid", (0.0050, null, null), (0.0150, 0.0080, 0.0220)).Best());
        // fd (lower is better) has no interval: ranked by value; a tie or a single value ranks nothing
        Assert.Equal(0, Row("fd", (401.1, null, null), (587.3, null, null), (null, null, null)).Best());
        Assert.Null(Row("fd", (401.1, null, null), (401.1, null, null), (587.3, null, null)).Best());
        Assert.Null(Row("fd", (401.1, null, null), (null, null, null)).Best());
    }

    [Fact]
    public void Values_print_with_their_intervals_and_only_a_separated_best_is_bold()
    {
        var runs = new List<ComparedRun> { new(Guid.NewGuid(), "a"), new(Guid.NewGuid(), "b") };
        var html = ResultsPages.ComparisonTable(new RunComparison(runs,
        [
            Row("adherence", (0.20, 0.14, 0.27), (0.45, 0.36, 0.53)),
            Row("kid", (0.0120, 0.0050, 0.0190), (0.0150, 0.0080, 0.0220)),
            Row("fd", (587.3, null, null), (401.1, null, null)),
        ])).Value;
        Assert.Contains("<td class=\"num\">0.200 [0.140, 0.270]</td>", html);
        Assert.Contains("<td class=\"num best\">0.450 [0.360, 0.530]</td>", html);
        // overlapping KID intervals: neither is bold
        Assert.Contains("<td class=\"num\">0.0120 [0.0050, 0.0190]</td>", html);
        Assert.Contains("<td class=\"num\">0.0150 [0.0080, 0.0220]</td>", html);
        Assert.Contains("<td class=\"num best\">401.10</td>", html);
        Assert.Equal(2, html.Split("num best").Length - 1);
        Assert.Contains("fd has no interval", html);
    }
}
