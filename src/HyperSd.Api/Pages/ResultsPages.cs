using System.Globalization;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Images;
using HyperSd.Services.Runs;
using HyperSd.Services.Schedules;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Routing;

namespace HyperSd.Api.Pages;

/// <summary>The results pages, rendered on the server from the application layer's queries (<see cref="RunQueries"/>,
/// <see cref="EvaluationQueries"/>, <see cref="ScheduleService"/>): the runs list, a run (stages, evaluation table, plots,
/// image grids), runs compared, the schedules; and the login form that signs the pages' cookie.</summary>
public static class ResultsPages
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var pages = app.MapGroup("").ExcludeFromDescription();
        pages.MapGet("/", () => Results.Redirect("/runs"));
        pages.MapGet(PageAuth.LoginPath, (string? returnUrl) => LoginForm(returnUrl, null, StatusCodes.Status200OK)).AllowAnonymous();
        // the form is guarded by UseSameOriginForms (Origin check) and the SameSite=Strict cookie, not by a token
        pages.MapPost(PageAuth.LoginPath, LoginAsync).AllowAnonymous().DisableAntiforgery();
        pages.MapPost("/logout", async (HttpContext context) =>
        {
            await context.SignOutAsync(PageAuth.CookieScheme);
            return Results.Redirect(PageAuth.LoginPath);
        }).DisableAntiforgery();
        pages.MapGet("/runs", RunsAsync);
        pages.MapGet("/runs/{id:guid}", RunAsync);
        pages.MapGet("/runs/{id:guid}/artifacts/{**path}", RunsEndpoints.DownloadAsync);
        pages.MapGet("/compare", CompareAsync);
        pages.MapGet("/schedules", SchedulesAsync);
    }

    static PageResult LoginForm(string? returnUrl, string? error, int status) => new("Log in", Html.Of(
        $"<h1>Log in</h1><form class=\"login\" method=\"post\" action=\"{PageAuth.LoginPath}\">" +
        $"<label for=\"key\">API key (any role: viewers see every page)</label>" +
        $"<input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"current-password\" required autofocus>" +
        $"<input type=\"hidden\" name=\"{PageAuth.ReturnUrlParameter}\" value=\"{PageAuth.LocalReturnUrl(returnUrl)}\">" +
        $"{(error is null ? Markup.Empty : Html.Of($"<p class=\"error\" role=\"alert\">{error}</p>"))}" +
        $"<button type=\"submit\">Log in</button></form>" +
        $"<p class=\"muted\">`hypersd serve` prints an admin key at its first start; the key stays in your browser's form only: " +
        $"the session cookie holds a signed ticket, not the key.</p>"), status);

    static async Task<IResult> LoginAsync(HttpContext context, ApiKeyRing ring)
    {
        if (!context.Request.HasFormContentType)
            return LoginForm(null, "send the form (application/x-www-form-urlencoded)", StatusCodes.Status400BadRequest);
        var form = await context.Request.ReadFormAsync(context.RequestAborted);
        var returnUrl = form[PageAuth.ReturnUrlParameter].ToString();
        var key = form["key"].ToString().Trim();
        if (key.Length == 0 || PageAuth.SignInPrincipal(ring, key) is not { } principal)
            return LoginForm(returnUrl, "That key is not one this host knows.", StatusCodes.Status400BadRequest);
        await context.SignInAsync(PageAuth.CookieScheme, principal, new AuthenticationProperties { IsPersistent = false });
        return Results.Redirect(PageAuth.LocalReturnUrl(returnUrl));
    }

    const int ListLimit = 50;

    static async Task<IResult> RunsAsync(MetadataDbContext db, string? state, Guid? schedule, int? offset, CancellationToken ct)
    {
        var filter = new RunFilter(State: QueryValues.Enum<RunState>(state, "state"), Schedule: schedule);
        var page = await RunQueries.ListAsync(db, filter, new Paging(offset ?? 0, ListLimit), ct);
        var now = DateTimeOffset.UtcNow;
        var states = Html.Join(Enum.GetValues<RunState>(), s => Html.Of(
            $" · <a href=\"/runs?state={s.ToString().ToLowerInvariant()}\">{s.ToString().ToLowerInvariant()}</a>"));
        var rows = Html.Join(page.Items, r => Html.Of(
            $"<tr><td><input type=\"checkbox\" name=\"runs\" value=\"{r.Id}\" aria-label=\"compare {r.Name}\"></td>" +
            $"<td><a href=\"/runs/{r.Id}\">{r.Name}</a> <span class=\"muted\">{Short(r.Id)}</span></td><td>{State(r.State)}</td>" +
            $"<td>{r.CurrentStage}</td><td>{r.BaseModel}</td><td>{Time(r.CreatedAt)}</td>" +
            $"<td class=\"num\">{Duration(r.Duration(now))}</td>" +
            $"<td>{(r.ScheduleId is null ? Markup.Empty : Html.Of($"<a href=\"/schedules\">scheduled</a> {Time(r.ScheduledAt)}"))}</td>" +
            $"<td class=\"error\">{r.Error}</td></tr>"));
        var query = StateQuery(state, schedule);
        var pager = Html.Of(
            $"{(page.Offset > 0
                ? Html.Of($"<a href=\"/runs?{query}offset={Math.Max(0, page.Offset - ListLimit)}\">newer</a> ") : Markup.Empty)}" +
            $"<span class=\"muted\">{(page.Total == 0 ? 0 : page.Offset + 1)}–{page.Offset + page.Items.Count} of {page.Total}</span>" +
            $"{(page.Offset + page.Items.Count < page.Total
                ? Html.Of($" <a href=\"/runs?{query}offset={page.Offset + ListLimit}\">older</a>") : Markup.Empty)}");
        return new PageResult("Runs", Html.Of(
            $"<h1>Runs</h1><p><a href=\"/runs\">all</a>{states}</p>" +
            $"<form method=\"get\" action=\"/compare\"><table id=\"runs\"><thead><tr><th></th><th>run</th><th>state</th><th>stage</th>" +
            $"<th>base model</th><th>created</th><th>duration</th><th>schedule</th><th>error</th></tr></thead>" +
            $"<tbody>{rows}</tbody></table>" +
            $"<p>{pager}</p><button type=\"submit\">Compare selected runs</button></form>"));
    }

    static string StateQuery(string? state, Guid? schedule) =>
        (state is null ? "" : $"state={Uri.EscapeDataString(state)}&") + (schedule is null ? "" : $"schedule={schedule}&");

    static async Task<IResult> RunAsync(Guid id, MetadataDbContext db, IArtifactStore store, CancellationToken ct)
    {
        if (await RunQueries.ShowAsync(db, id, ct) is not { } details)
            return new PageResult("Not found", Html.Of($"<h1>Not found</h1><p>No run {id} in the store.</p>"),
                StatusCodes.Status404NotFound);
        var run = details.Run;
        var comparison = await EvaluationQueries.CompareAsync(db, [id], new EvaluationFilter(), ct);
        var now = DateTimeOffset.UtcNow;
        var stages = Html.Join(details.Stages, s => Html.Of(
            $"<tr><td class=\"num\">{s.Index}</td><td>{s.Name}</td><td>{s.Kind}</td><td>{s.Role}</td><td>{State(s.State)}</td>" +
            $"<td class=\"num\">{s.Attempt}/{s.MaxAttempts}</td>" +
            $"<td><progress max=\"1\" value=\"{s.Progress:0.###}\">{s.Progress:P0}</progress> {s.Progress:P0}</td>" +
            $"<td>{Time(s.StartedAt)}</td><td class=\"num\">{Duration(s.Duration ?? SoFar(s, now))}</td>" +
            $"<td class=\"num\">{Duration(s.Gap)}</td><td class=\"error\">{s.Error}</td></tr>"));
        var artifacts = Html.Join(details.Artifacts, a => Html.Of(
            $"<tr><td>{a.Kind.ToString().ToLowerInvariant()}</td><td>{(a.Kind is ArtifactKind.Grid or ArtifactKind.Report
                ? Html.Of($"<a href=\"{ArtifactUrl(id, a.Path)}\">{a.Path}</a>") : Html.Of($"{a.Path}"))}</td>" +
            $"<td>{a.Stage}</td><td class=\"num\">{a.SizeBytes:N0}</td><td>{Time(a.CreatedAt)}</td></tr>"));
        return new PageResult(run.Name, Html.Of(
            $"<h1>{run.Name} <span class=\"muted\">{run.Id}</span></h1>" +
            $"<p>{State(run.State)} · base model {run.BaseModel} · created {Time(run.CreatedAt)} · started {Time(run.StartedAt)} · " +
            $"finished {Time(run.FinishedAt)} · {Duration(run.Duration(now))}" +
            $"{(run.ScheduleId is null ? Markup.Empty
                : Html.Of($" · started by <a href=\"/schedules\">a schedule</a> firing at {Time(run.ScheduledAt)}"))}</p>" +
            $"{(run.Error is null ? Markup.Empty : Html.Of($"<p class=\"error\">{run.Error}</p>"))}" +
            $"<h2>Stages</h2><table id=\"stages\"><thead><tr><th>#</th><th>stage</th><th>kind</th><th>role</th><th>state</th>" +
            $"<th>attempt</th>" +
            $"<th>progress</th><th>started</th><th>duration</th><th>gap</th><th>error</th></tr></thead><tbody>{stages}</tbody></table>" +
            $"<h2>Evaluation</h2>{EvaluationTable(comparison)}" +
            $"<h2>Metrics against steps</h2><div class=\"plots\">{Plots(comparison)}</div>" +
            $"<h2>Image grids</h2>" +
            $"<div class=\"grids\">{Grids(id, details.Artifacts.Where(a => a.Kind == ArtifactKind.Grid), store)}</div>" +
            $"{Generated(id, details.Artifacts.Where(a => a.Kind == ArtifactKind.Images
                && a.StageKind == Services.Generator.GenerateImagesStage.Kind), store)}" +
            $"<h2>Artifacts</h2><table id=\"artifacts\"><thead><tr><th>kind</th><th>path</th><th>stage</th><th>bytes</th>" +
            $"<th>created</th></tr></thead>" +
            $"<tbody>{artifacts}</tbody></table>"));
    }

    /// <summary>A running stage's time since it started.</summary>
    static TimeSpan? SoFar(StageView stage, DateTimeOffset now) =>
        stage.StartedAt is { } started && stage.FinishedAt is null ? now - started : null;

    /// <summary>One run's rows: a row per metric, model and sampler, a column per step count.</summary>
    static Markup EvaluationTable(RunComparison comparison)
    {
        if (comparison.Rows.Count == 0) return Html.Of($"<p class=\"muted\">No evaluation rows (yet).</p>");
        var steps = comparison.Rows.Select(r => r.Steps).Distinct().Order().ToList();
        var rows = Html.Join(comparison.Rows.GroupBy(r => (r.Metric, r.Model, r.Sampler)), g => Html.Of(
            $"<tr><td>{g.Key.Metric}</td><td>{g.Key.Model}</td><td>{g.Key.Sampler}</td>" +
            $"{Html.Join(steps, s => g.FirstOrDefault(r => r.Steps == s) is { } r
                ? Value(r.Metric, r.Values[0], r.Intervals[0], false) : Html.Of($"<td></td>"))}</tr>"));
        return Html.Of(
            $"<table id=\"evaluation\"><thead><tr><th>metric</th><th>model</th><th>sampler</th>" +
            $"{Html.Join(steps, s => Html.Of($"<th>{s} steps</th>"))}</tr></thead><tbody>{rows}</tbody></table>");
    }

    /// <summary>A plot per metric; a line per model and sampler (and run, when several are compared: coloured by run,
    /// dashed by model and sampler); error bars where values have intervals.</summary>
    static Markup Plots(RunComparison comparison)
    {
        var several = comparison.Runs.Count > 1;
        var modelSamplers = comparison.Rows.Select(r => (r.Model, r.Sampler)).Distinct().ToList();
        return Html.Join(comparison.Rows.GroupBy(r => r.Metric), metric =>
        {
            var series = comparison.Runs.SelectMany((run, i) => metric.GroupBy(r => (r.Model, r.Sampler))
                    .Select(g => (g.Key, Points: g.Where(r => r.Values[i] is not null)
                        .Select(r => new PlotPoint(r.Steps, r.Values[i]!.Value, r.Intervals[i]?.Low, r.Intervals[i]?.High)).ToList()))
                    .Where(s => s.Points.Count > 0)
                    .Select(s => new PlotSeries(
                        several ? $"{RunLabel(run)} · {s.Key.Model} · {s.Key.Sampler}" : $"{s.Key.Model} · {s.Key.Sampler}",
                        s.Points, Color: several ? i : modelSamplers.IndexOf(s.Key), Dash: several ? modelSamplers.IndexOf(s.Key) : 0)))
                .ToList();
            return SvgPlot.Render(metric.Key, EvaluationQueries.LowerIsBetter(metric.Key), series);
        });
    }

    static string RunLabel(ComparedRun run) => $"{run.Name} {Short(run.Id)}";

    /// <summary>The evaluation's grids: rows are prompts, columns step counts (as the PNG's own text chunks say).</summary>
    static Markup Grids(Guid runId, IEnumerable<ArtifactView> grids, IArtifactStore store) => Html.Join(grids, a =>
    {
        var full = store.GetFullPath(a.Path);
        if (!File.Exists(full)) return Html.Of($"<p class=\"error\">{a.Path}: missing from the artifact store</p>");
        var (width, height, text) = ImageFiles.ReadPngInfo(full);
        var steps = text.GetValueOrDefault("steps")?.Split(',') ?? [];
        var prompts = text.GetValueOrDefault("prompts")?.Split('\n') ?? [];
        var (shownWidth, shownHeight) = Shown(width, height, steps.Length > 0 ? width / steps.Length : width);
        return Html.Of(
            $"<figure class=\"grid\"><div class=\"cols\">{Html.Join(steps, s => Html.Of($"<span>{s} steps</span>"))}</div>" +
            $"<div class=\"body\"><div class=\"rows\">{Html.Join(prompts, p => Html.Of($"<span>{p}</span>"))}</div>" +
            $"<img src=\"{ArtifactUrl(runId, a.Path)}\" width=\"{shownWidth}\" height=\"{shownHeight}\" " +
            $"alt=\"{text.GetValueOrDefault("model")} with {text.GetValueOrDefault("sampler")}: prompts by steps\"></div>" +
            $"<figcaption>{text.GetValueOrDefault("model") ?? a.Stage} · {text.GetValueOrDefault("sampler")} " +
            $"<span class=\"muted\">{Path.GetFileName(a.Path)}</span></figcaption></figure>");
    });

    const int GeneratedShown = 24;

    /// <summary>The first images of each generation (a folder artifact of PNGs), each with its prompt (the first line of its
    /// "parameters" text, as the generator writes it).</summary>
    static Markup Generated(Guid runId, IEnumerable<ArtifactView> folders, IArtifactStore store) => Html.Join(folders, a =>
    {
        var dir = store.GetFullPath(a.Path);
        if (!Directory.Exists(dir)) return Html.Of($"<p class=\"error\">{a.Path}: missing from the artifact store</p>");
        var files = Directory.EnumerateFiles(dir, "*.png").Order(StringComparer.Ordinal).ToList();
        var images = Html.Join(files.Take(GeneratedShown), file =>
        {
            var (width, height, text) = ImageFiles.ReadPngInfo(file);
            var prompt = text.GetValueOrDefault("parameters")?.Split('\n')[0] ?? "";
            var (shownWidth, shownHeight) = Shown(width, height, width);
            return Html.Of($"<figure class=\"image\"><img src=\"{ArtifactUrl(runId, $"{a.Path}/{Path.GetFileName(file)}")}\" " +
                           $"width=\"{shownWidth}\" height=\"{shownHeight}\" alt=\"{prompt}\" title=\"{prompt}\">" +
                           $"<figcaption>{prompt}</figcaption></figure>");
        });
        return Html.Of($"<h2>Generated images <span class=\"muted\">{Math.Min(files.Count, GeneratedShown)} of {files.Count} " +
                       $"in {a.Path}</span></h2>" +
                       $"<div class=\"gallery\">{images}</div>");
    });

    /// <summary>The size an image is shown at: toy tiles (32 px) scaled up, pixelated, to at least 128 px; large ones
    /// (a real-scale grid) scaled down to at most 1,024 px wide.</summary>
    static (int Width, int Height) Shown(int width, int height, int tile)
    {
        var shown = Math.Min(width * Math.Clamp(128 / Math.Max(tile, 1), 1, 8), 1024);
        return (shown, (int)Math.Round(height * (double)shown / Math.Max(width, 1)));
    }

    static string ArtifactUrl(Guid runId, string path) =>
        $"/runs/{runId}/artifacts/{string.Join('/', path.Split('/').Select(Uri.EscapeDataString))}";

    static async Task<IResult> CompareAsync(MetadataDbContext db, [FromQuery] Guid[]? runs, CancellationToken ct)
    {
        if (runs is not { Length: >= 2 })
            return new PageResult("Compare runs", Html.Of(
                $"<h1>Compare runs</h1><p class=\"error\">Select two or more runs on the <a href=\"/runs\">runs list</a>.</p>"),
                StatusCodes.Status400BadRequest);
        RunComparison comparison;
        try
        {
            comparison = await EvaluationQueries.CompareAsync(db, runs.Distinct().ToList(), new EvaluationFilter(), ct);
        }
        catch (UnknownIdException e)
        {
            return new PageResult("Compare runs", Html.Of($"<h1>Compare runs</h1><p class=\"error\">{e.Message}</p>"),
                StatusCodes.Status404NotFound);
        }
        return new PageResult("Compare runs", Html.Of(
            $"<h1>Compare runs</h1>{(comparison.Rows.Count == 0
                ? Html.Of($"<p class=\"muted\">None of these runs has evaluation rows.</p>")
                : Html.Of($"{ComparisonTable(comparison)}<h2>Metrics against steps</h2>" +
                          $"<div class=\"plots\">{Plots(comparison)}</div>"))}"));
    }

    /// <summary>The runs' values side by side, each with its 95 % interval where it has one; the best of a row in bold
    /// where it stands apart (<see cref="ComparisonRow.Best"/>).</summary>
    public static Markup ComparisonTable(RunComparison comparison)
    {
        var header = Html.Join(comparison.Runs, r => Html.Of($"<th><a href=\"/runs/{r.Id}\">{RunLabel(r)}</a></th>"));
        var rows = Html.Join(comparison.Rows, r =>
        {
            var best = r.Best();
            return Html.Of($"<tr><td>{r.Metric}</td><td>{r.Model}</td><td>{r.Sampler}</td><td class=\"num\">{r.Steps}</td>" +
                           $"{Html.Join(r.Values.Select((v, i) => Value(r.Metric, v, r.Intervals[i], i == best)))}</tr>");
        });
        return Html.Of(
            $"<table id=\"comparison\"><thead><tr><th>metric</th><th>model</th><th>sampler</th><th>steps</th>{header}</tr></thead>" +
            $"<tbody>{rows}</tbody></table><p class=\"muted\" id=\"ranking\">In bold: the best value of its row where it stands " +
            $"apart, its 95 % interval overlapping no other run's. fd has no interval on one image set: it is ranked by value, " +
            $"against its real-versus-real floor in each run's results.md.</p>");
    }

    const int LastRuns = 5;

    static async Task<IResult> SchedulesAsync(ScheduleService schedules, MetadataDbContext db, CancellationToken ct)
    {
        var rows = new List<Markup>();
        foreach (var s in await schedules.ListAsync(ct))
        {
            var last = await RunQueries.ListAsync(db, new RunFilter(Schedule: s.Id), new Paging(0, LastRuns), ct);
            rows.Add(Html.Of(
                $"<tr><td>{s.Name}</td><td><code>{s.Cron}</code></td><td>{s.TimeZone}</td>" +
                $"<td>{s.Overlap.ToString().ToLowerInvariant()}</td>" +
                $"<td>{(s.Enabled ? "enabled" : "paused")}</td><td>{Time(s.NextFiring)}</td>" +
                $"<td>{(last.Total == 0 ? Html.Of($"<span class=\"muted\">none yet</span>") : Html.Join(last.Items, r => Html.Of(
                    $"<div><a href=\"/runs/{r.Id}\">{Time(r.ScheduledAt ?? r.CreatedAt)}</a> {State(r.State)}</div>")))}" +
                $"{(last.Total > LastRuns ? Html.Of($"<a href=\"/runs?schedule={s.Id}\" class=\"muted\">{last.Total} in all</a>")
                    : Markup.Empty)}</td></tr>"));
        }
        return new PageResult("Schedules", Html.Of(
            $"<h1>Schedules</h1>{(rows.Count == 0
                ? Html.Of($"<p class=\"muted\">No schedules (add them with <code>hypersd schedules add</code> or POST /api/schedules).</p>")
                : Html.Of($"<table id=\"schedules\"><thead><tr><th>name</th><th>cron</th><th>time zone</th><th>overlap</th><th>state</th>" +
                          $"<th>next firing</th><th>last runs</th></tr></thead><tbody>{Html.Join(rows)}</tbody></table>"))}" +
            $"<p>Firings and their jobs: the <a href=\"/hangfire/recurring\">dashboard</a>.</p>"));
    }

    static Markup Value(string metric, double? value, MetricInterval? interval, bool best) => value is { } v
        ? Html.Of($"<td class=\"num{(best ? " best" : "")}\">" +
                  $"{HyperSd.Services.Runs.EvaluationTable.Format(metric, v, interval?.Low, interval?.High)}</td>")
        : Html.Of($"<td></td>");

    static Markup State<T>(T state) where T : struct, Enum
    {
        var name = state.ToString().ToLowerInvariant();
        return Html.Of($"<span class=\"state-{name}\">{name}</span>");
    }

    static string Short(Guid id) => id.ToString("N")[..8];

    static string Time(DateTimeOffset? time) =>
        time is { } t ? t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) + " UTC" : "";

    static string Duration(TimeSpan? span) => span switch
    {
        null => "",
        { TotalMinutes: < 1 } d => d.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture) + " s",
        { TotalHours: < 1 } d => d.ToString(@"m\:ss", CultureInfo.InvariantCulture),
        TimeSpan d => ((int)d.TotalHours).ToString(CultureInfo.InvariantCulture) + d.ToString(@"\:mm\:ss", CultureInfo.InvariantCulture),
    };
}
