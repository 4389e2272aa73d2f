using System.Xml.Linq;
using HyperSd.Data.Entities;

namespace HyperSd.Api.Tests;

/// <summary>The run page and the compare page, in process, on two runs whose evaluation rows are written to the store
/// directly: values print with their 95 % intervals in both tables, a row's best is bold only where it stands apart, and
/// the plots draw an error bar for each value with an interval.</summary>
public sealed class ResultsPagesTests
{
    // (metric, steps, run a's value, low, high, run b's value, low, high); fd has no interval
    static readonly (string Metric, int Steps, double A, double? ALow, double? AHigh, double B, double? BLow, double? BHigh)[] Rows =
    [
        ("adherence", 4, 0.20, 0.14, 0.27, 0.45, 0.36, 0.53), // apart: b's is bold
        ("kid", 4, 0.0120, 0.0050, 0.0190, 0.0150, 0.0080, 0.0220), // overlapping: neither is
        ("fd", 4, 587.3, null, null, 401.1, null, null), // ranked by value: b's is bold
        ("adherence", 1, 0.10, 0.06, 0.16, 0.12, 0.07, 0.18),
    ];

    static async Task<(Guid A, Guid B)> SeedAsync(ApiTestHost host)
    {
        await using var db = host.Db();
        var now = DateTimeOffset.UtcNow;
        var recipe = new StoredRecipe { Id = Guid.NewGuid(), Name = "pages", Yaml = "name: pages\n", Sha256 = "", CreatedAt = now };
        db.Recipes.Add(recipe);
        var ids = new List<Guid>();
        foreach (var name in new[] { "a", "b" })
        {
            var run = new Run { Id = Guid.NewGuid(), RecipeId = recipe.Id, Name = name, BaseModel = "toy", State = RunState.Succeeded,
                CreatedAt = now, UpdatedAt = now };
            var stage = new Stage { Id = Guid.NewGuid(), RunId = run.Id, Name = "evaluate", Kind = "evaluate", Role = "evaluator",
                State = StageState.Succeeded };
            db.Runs.Add(run);
            db.Stages.Add(stage);
            foreach (var r in Rows)
            {
                var (value, low, high) = name == "a" ? (r.A, r.ALow, r.AHigh) : (r.B, r.BLow, r.BHigh);
                db.Evaluations.Add(new Evaluation { Id = Guid.NewGuid(), RunId = run.Id, StageId = stage.Id, Model = "tscd-k4",
                    Sampler = "tcd", Steps = r.Steps, Metric = r.Metric, Value = value, Low = low, High = high, CreatedAt = now });
            }
            ids.Add(run.Id);
        }
        await db.SaveChangesAsync();
        return (ids[0], ids[1]);
    }

    /// <summary>The element that starts with <paramref name="start"/> up to its closing tag (the pages do not nest them).</summary>
    static string Element(string html, string start, string end)
    {
        var from = html.IndexOf(start, StringComparison.Ordinal);
        Assert.True(from >= 0, $"no {start} in the page");
        return html[from..(html.IndexOf(end, from, StringComparison.Ordinal) + end.Length)];
    }

    static int ErrorBars(string html, string metric) => XElement.Parse(Element(html, $"<svg class=\"plot\" data-metric=\"{metric}\"",
        "</svg>")).Descendants().Count(e => e.Name.LocalName == "path" && e.Attribute("class")?.Value == "error-bar");

    [Fact]
    public async Task Both_tables_show_intervals_the_best_is_bold_only_apart_and_plots_draw_error_bars()
    {
        await using var host = await ApiTestHost.StartAsync();
        var (a, b) = await SeedAsync(host);
        var client = host.Client(ApiTestHost.ViewerKey);

        var run = await client.GetStringAsync($"/runs/{a}");
        var evaluation = Element(run, "<table id=\"evaluation\">", "</table>");
        Assert.Contains("<td class=\"num\">0.200 [0.140, 0.270]</td>", evaluation);
        Assert.Contains("<td class=\"num\">0.0120 [0.0050, 0.0190]</td>", evaluation);
        Assert.Contains("<td class=\"num\">587.30</td>", evaluation); // fd: the value alone
        Assert.DoesNotContain("best", evaluation); // one run: nothing to rank
        // an error bar per value with an interval: adherence at 1 and 4 steps, kid at 4; none for fd
        Assert.Equal(2, ErrorBars(run, "adherence"));
        Assert.Equal(1, ErrorBars(run, "kid"));
        Assert.Equal(0, ErrorBars(run, "fd"));

        var compare = await client.GetStringAsync($"/compare?runs={a}&runs={b}");
        var comparison = Element(compare, "<table id=\"comparison\">", "</table>");
        Assert.Contains("<td class=\"num\">0.200 [0.140, 0.270]</td><td class=\"num best\">0.450 [0.360, 0.530]</td>", comparison);
        Assert.Contains("<td class=\"num\">0.0120 [0.0050, 0.0190]</td><td class=\"num\">0.0150 [0.0080, 0.0220]</td>", comparison);
        Assert.Contains("<td class=\"num\">587.30</td><td class=\"num best\">401.10</td>", comparison);
        Assert.Contains("<td class=\"num\">0.100 [0.060, 0.160]</td><td class=\"num\">0.120 [0.070, 0.180]</td>", comparison);
        Assert.Equal(2, comparison.Split("num best").Length - 1);
        Assert.Contains("fd has no interval", compare);
        Assert.Equal(4, ErrorBars(compare, "adherence")); // two runs, two step counts
        Assert.Equal(2, ErrorBars(compare, "kid"));
    }
}
