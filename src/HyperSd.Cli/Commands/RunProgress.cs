using System.Globalization;
using System.Text.Json.Nodes;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Runs;
using Microsoft.EntityFrameworkCore;
using Spectre.Console;

namespace HyperSd.Cli.Commands;

/// <summary>Follows a run in the store until it ends: Spectre progress bars on a terminal, plain lines otherwise.</summary>
public static class RunProgress
{
    static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(500);

    static bool Finished(Run run) => run.State is RunState.Succeeded or RunState.Failed or RunState.Cancelled;

    static async Task<Run> ReadAsync(IDbContextFactory<MetadataDbContext> dbs, Guid runId, CancellationToken ct)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        return await db.Runs.AsNoTracking().Include(r => r.Stages.OrderBy(s => s.Index)).SingleAsync(r => r.Id == runId, ct);
    }

    public static async Task<Run> FollowAsync(IDbContextFactory<MetadataDbContext> dbs, Guid runId, CancellationToken ct)
    {
        var run = await ReadAsync(dbs, runId, ct);
        if (!Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive)
        {
            await AnsiConsole.Progress().AutoClear(false).HideCompleted(false)
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                    new SpinnerColumn())
                .StartAsync(async ctx =>
                {
                    var bars = run.Stages.ToDictionary(s => s.Id, s => ctx.AddTask(s.Name, autoStart: false, maxValue: 1));
                    while (true)
                    {
                        foreach (var stage in run.Stages)
                        {
                            var bar = bars[stage.Id];
                            bar.Description = Markup.Escape(Line(stage));
                            if (stage.State is StageState.Running or StageState.Dispatched && !bar.IsStarted) bar.StartTask();
                            bar.Value = stage.State == StageState.Succeeded ? 1 : stage.Progress;
                            if (stage.State is StageState.Succeeded or StageState.Failed or StageState.Cancelled && bar.IsStarted)
                                bar.StopTask();
                        }
                        if (Finished(run)) break;
                        await Task.Delay(Poll, ct);
                        run = await ReadAsync(dbs, runId, ct);
                    }
                });
            return run;
        }

        var shown = new Dictionary<Guid, (StageState, int, int)>();
        while (true)
        {
            foreach (var stage in run.Stages)
            {
                var key = (stage.State, stage.Attempt, (int)(stage.Progress * 10));
                if (shown.TryGetValue(stage.Id, out var last) && last == key) continue;
                if (shown.ContainsKey(stage.Id) || stage.State != StageState.Pending)
                    Console.WriteLine($"{DateTime.Now:HH:mm:ss} {Line(stage)}");
                shown[stage.Id] = key;
            }
            if (Finished(run)) return run;
            await Task.Delay(Poll, ct);
            run = await ReadAsync(dbs, runId, ct);
        }
    }

    /// <summary>"tscd-k8 running #1 42% step 126/300 loss 0.0123 4.1 steps/s".</summary>
    public static string Line(Stage stage)
    {
        var text = $"{stage.Name} {stage.State.ToString().ToLowerInvariant()} #{stage.Attempt} " +
                   $"{stage.Progress.ToString("P0", CultureInfo.InvariantCulture)}";
        if (stage.State is StageState.Failed or StageState.Cancelled && stage.Error is { } error) return $"{text}: {error}";
        if (stage.ProgressDetail is null || JsonNode.Parse(stage.ProgressDetail) is not JsonObject d) return text;
        if (d["step"] is { } step) text += $" step {step}/{d["total_steps"]}";
        else if (d["done"] is { } done) text += $" {done}/{d["total"]}";
        if (d["losses"]?["consistency"] is { } loss)
            text += $" loss {loss.GetValue<double>().ToString("G4", CultureInfo.InvariantCulture)}";
        if (d["steps_per_second"] is { } speed) text += $" {speed.GetValue<double>().ToString("F1", CultureInfo.InvariantCulture)} steps/s";
        return text;
    }

    /// <summary>Outcome, error, evaluation table and where the results are.</summary>
    public static async Task PrintResultAsync(MetadataDbContext db, Run run, string artifactRoot)
    {
        Console.WriteLine();
        Console.WriteLine($"run {run.Id} ({run.Name}): {run.State.ToString().ToLowerInvariant()}" +
                          (run.StartedAt is { } s && run.FinishedAt is { } f ? $" in {(f - s).TotalSeconds:F1} s" : ""));
        if (run.Error is { } error) Console.WriteLine($"error: {error}");
        if (await EvaluationTable.QueryAsync(db, [run.Id]) is { } table)
        {
            Console.WriteLine();
            Console.WriteLine(table);
        }
        foreach (var (kind, label) in new[] { (ArtifactKind.Report, "results"), (ArtifactKind.Images, "images") })
        {
            var path = await db.Artifacts.AsNoTracking()
                .Where(a => a.RunId == run.Id && a.Kind == kind).Select(a => a.Path).FirstOrDefaultAsync();
            if (path is not null) Console.WriteLine($"{label}: {Path.Combine(artifactRoot, path)}");
        }
    }
}
