using System.Globalization;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Services.Runs;
using HyperSd.Services.Schedules;
using HyperSd.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using Xunit.Abstractions;

namespace HyperSd.Api.Tests;

/// <summary>A test that drives Debian's chromium (Playwright's own browser download cannot work here); skipped, saying
/// why, where it is not installed (.ci/run installs it).</summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    public const string Executable = "/usr/bin/chromium";

    public ChromiumFactAttribute()
    {
        if (!File.Exists(Executable)) Skip = $"no {Executable}: install Debian's chromium package (apt-get install chromium)";
    }
}

/// <summary>Two tiny toy runs on a real Kestrel host on 127.0.0.1: one submitted through the API, one started by a
/// schedule's firing (a different recipe: TSCD at 2 steps a stage, so the two differ).</summary>
public sealed class ToyRunsOnKestrel : IAsyncLifetime
{
    public ApiTestHost Host { get; private set; } = null!;
    public Guid Submitted { get; private set; }
    public Guid Scheduled { get; private set; }
    string? models;

    public async Task InitializeAsync()
    {
        if (!File.Exists(ChromiumFactAttribute.Executable)) return;
        models = Directory.CreateTempSubdirectory("hypersd-pages-models-").FullName;
        var (teacher, recognizer) = TinyToy.WriteModels(models);
        Host = await ApiTestHost.StartAsync(configure: o => o.ToyRecognizerDir = recognizer, kestrel: true);
        using var client = new HttpClient { BaseAddress = Host.Address };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ApiTestHost.OperatorKey);
        var submitted = await client.PostAsync("/api/runs", new StringContent(TinyToy.Recipe(teacher), Encoding.UTF8, "application/yaml"));
        submitted.EnsureSuccessStatusCode();
        Submitted = (await submitted.Content.ReadFromJsonAsync<RunStateView>(ApiTestHost.Json))!.Id;
        var schedules = Host.App.Services.GetRequiredService<ScheduleService>();
        var schedule = await schedules.SaveAsync(null,
            new ScheduleRequest("nightly-tiny", null, TinyToy.Recipe(teacher, tscdSteps: 2), "0 2 * * *", "Europe/Berlin"));
        Scheduled = (await schedules.FireAsync(schedule.Id, DateTimeOffset.UtcNow)).RunId
                    ?? throw new InvalidOperationException("the schedule's firing started no run");
        var deadline = DateTime.UtcNow.AddMinutes(8);
        foreach (var id in new[] { Submitted, Scheduled })
        {
            while (true)
            {
                var run = (await client.GetFromJsonAsync<RunDetails>($"/api/runs/{id}", ApiTestHost.Json))!;
                if (run.Run.State == RunState.Succeeded) break;
                if (run.Run.State is RunState.Failed or RunState.Cancelled || DateTime.UtcNow > deadline)
                    throw new InvalidOperationException($"run {id} {run.Run.State}: {run.Run.Error}");
                await Task.Delay(500);
            }
        }
    }

    public async Task DisposeAsync()
    {
        if (models is null) return;
        await Host.DisposeAsync();
        Directory.Delete(models, recursive: true);
    }
}

/// <summary>The pages in a real headless browser: the login form, the run page (stages, evaluation table, image grids,
/// plots), the runs list into the comparison page, the schedules page; no console errors, no failed loads (the CSP
/// would report any script or outside file); screenshots and page-load times kept under the test's output folder.</summary>
[Collection(nameof(ToyRunTests))]
public sealed class PagesBrowserTests(ToyRunsOnKestrel runs, ITestOutputHelper output) : IClassFixture<ToyRunsOnKestrel>
{
    static readonly string Screenshots = Path.Combine(AppContext.BaseDirectory, "screenshots");

    /// <summary>A signed-in page (a viewer's key through the login form) whose console errors, script errors and failed
    /// or refused loads are collected.</summary>
    async Task<(IPlaywright, IBrowser, IPage, List<string> Problems)> SignedInAsync(string path)
    {
        var playwright = await Playwright.CreateAsync();
        var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = ChromiumFactAttribute.Executable, Headless = true });
        var context = await browser.NewContextAsync(new()
        {
            BaseURL = runs.Host.Address.ToString(), ViewportSize = new() { Width = 1400, Height = 900 },
        });
        var page = await context.NewPageAsync();
        var problems = new List<string>();
        page.Console += (_, m) => { if (m.Type is "error" or "warning") problems.Add($"console {m.Type}: {m.Text}"); };
        page.PageError += (_, e) => problems.Add($"page error: {e}");
        page.RequestFailed += (_, r) => problems.Add($"failed: {r.Url} {r.Failure}");
        page.Response += (_, r) => { if (r.Status >= 400) problems.Add($"{r.Status}: {r.Url}"); };

        await page.GotoAsync(path);
        Assert.Equal($"/login?returnUrl={Uri.EscapeDataString(path)}", new Uri(page.Url).PathAndQuery);
        await page.FillAsync("#key", ApiTestHost.ViewerKey);
        await page.ClickAsync("form.login button[type=submit]");
        await page.WaitForURLAsync(url => new Uri(url).PathAndQuery == path);
        Assert.Contains("viewer (viewer)", await page.InnerTextAsync("header"));
        return (playwright, browser, page, problems);
    }

    async Task ScreenshotAsync(IPage page, string name)
    {
        Directory.CreateDirectory(Screenshots);
        var file = Path.Combine(Screenshots, name);
        await page.ScreenshotAsync(new() { Path = file, FullPage = true });
        output.WriteLine($"screenshot: {file}");
    }

    /// <summary>For each image: loaded and decoded (a broken image has no natural width).</summary>
    const string Decoded = "images => images.map(i => i.complete && i.naturalWidth > 0)";

    [ChromiumFact]
    public async Task The_login_form_leads_to_the_run_page_with_its_stages_evaluation_grids_and_plots()
    {
        var (playwright, browser, page, problems) = await SignedInAsync($"/runs/{runs.Submitted}");
        using var _ = playwright;
        await using var __ = browser;
        await using var db = runs.Host.Db();
        var details = (await RunQueries.ShowAsync(db, runs.Submitted))!;

        Assert.Equal(details.Stages.Count, await page.Locator("#stages tbody tr").CountAsync());
        Assert.Equal(details.Stages.Count, await page.Locator("#stages .state-succeeded").CountAsync());
        var metrics = db.Evaluations.Where(v => v.RunId == runs.Submitted).Select(v => v.Metric).Distinct().ToList();
        Assert.NotEmpty(metrics);
        Assert.Equal(metrics.Order(), (await page.Locator("svg.plot").EvaluateAllAsync<string[]>(
            "plots => plots.map(p => p.dataset.metric)")).Order());
        Assert.True(await page.Locator("svg.plot polyline").CountAsync() >= metrics.Count);
        // every grid the evaluation made is shown and decoded (not a broken image)
        var grids = details.Artifacts.Count(a => a.Kind == ArtifactKind.Grid);
        Assert.True(grids > 0);
        var loaded = await page.Locator(".grids img").EvaluateAllAsync<bool[]>(Decoded);
        Assert.Equal(Enumerable.Repeat(true, grids), loaded);
        // the generation's images too (the tiny recipe makes fewer than the page shows)
        var generated = Directory.GetFiles(runs.Host.App.Services.GetRequiredService<IArtifactStore>()
            .GetFullPath(details.Artifacts.Single(a => a.StageKind == Services.Generator.GenerateImagesStage.Kind).Path), "*.png").Length;
        Assert.True(generated > 0);
        Assert.Equal(Enumerable.Repeat(true, generated),
            await page.Locator(".gallery img").EvaluateAllAsync<bool[]>(Decoded));
        // the grid's own labels: a column per evaluated step count
        Assert.Contains("1 steps", await page.InnerTextAsync(".grids figure"));
        var table = await page.InnerTextAsync("#evaluation");
        var fd = db.Evaluations.First(v => v.RunId == runs.Submitted && v.Metric == "fd");
        Assert.Contains(EvaluationTable.Format(fd.Metric, fd.Value), table);
        await ScreenshotAsync(page, "run.png");
        Assert.Empty(problems);
    }

    [ChromiumFact]
    public async Task The_runs_list_compares_the_two_runs_and_the_schedules_page_shows_the_firing()
    {
        var (playwright, browser, page, problems) = await SignedInAsync("/runs");
        using var _ = playwright;
        await using var __ = browser;
        Assert.Equal(2, await page.Locator("#runs tbody tr").CountAsync());
        await ScreenshotAsync(page, "runs.png");
        await page.CheckAsync($"input[value='{runs.Submitted}']");
        await page.CheckAsync($"input[value='{runs.Scheduled}']");
        await page.ClickAsync("main button[type=submit]");
        await page.WaitForURLAsync(url => new Uri(url).AbsolutePath == "/compare");
        var compareUrl = new Uri(page.Url).PathAndQuery;
        // a value column per run, and in each plot a line of each run
        Assert.Equal(4 + 2, await page.Locator("#comparison thead th").CountAsync());
        var labels = await page.Locator("svg.plot g.series").EvaluateAllAsync<string[]>("gs => gs.map(g => g.dataset.label)");
        foreach (var id in new[] { runs.Submitted, runs.Scheduled })
            Assert.Contains(labels, l => l.Contains(id.ToString("N")[..8]));
        await ScreenshotAsync(page, "compare.png");

        await page.ClickAsync("header a[href='/schedules']");
        await page.WaitForURLAsync(url => new Uri(url).AbsolutePath == "/schedules");
        var schedule = await page.InnerTextAsync("#schedules tbody tr");
        Assert.Contains("nightly-tiny", schedule);
        Assert.Contains("succeeded", schedule);
        Assert.Equal($"/runs/{runs.Scheduled}", await page.GetAttributeAsync("#schedules tbody tr a", "href"));
        await ScreenshotAsync(page, "schedules.png");
        Assert.Empty(problems);

        await MeasureAsync(page, [("run", $"/runs/{runs.Submitted}"), ("compare", compareUrl)]);
        Assert.Empty(problems);
    }

    const int Loads = 10;

    /// <summary>Each page loaded <see cref="Loads"/> times after a first (warm-up) load: the navigation timing's time to the
    /// first byte and to the end of the load event, as the browser measured them.</summary>
    async Task MeasureAsync(IPage page, IReadOnlyList<(string Name, string Path)> pages)
    {
        var report = new StringBuilder("| page | first load (ms) | median load (ms) | max load (ms) | median first byte (ms) |\n" +
                                       "| --- | ---: | ---: | ---: | ---: |\n");
        foreach (var (name, path) in pages)
        {
            var timings = new List<(double FirstByte, double Load)>();
            for (var i = 0; i <= Loads; i++)
            {
                await page.GotoAsync(path);
                double[] t;
                // the load event's end is stamped just after Playwright sees the event
                while ((t = await page.EvaluateAsync<double[]>("() => { const n = performance.getEntriesByType('navigation')[0]; " +
                           "return [n.responseStart - n.startTime, n.loadEventEnd - n.startTime]; }"))[1] <= 0)
                    await Task.Delay(10);
                timings.Add((t[0], t[1]));
            }
            var warm = timings.Skip(1).ToList();
            string Ms(double v) => v.ToString("F1", CultureInfo.InvariantCulture);
            report.Append($"| {name} | {Ms(timings[0].Load)} | {Ms(Median(warm.Select(w => w.Load)))} | {Ms(warm.Max(w => w.Load))} | " +
                          $"{Ms(Median(warm.Select(w => w.FirstByte)))} |\n");
        }
        output.WriteLine(report.ToString());
        Directory.CreateDirectory(Screenshots);
        await File.WriteAllTextAsync(Path.Combine(Screenshots, "page-load.md"), report.ToString());
    }

    static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }
}
