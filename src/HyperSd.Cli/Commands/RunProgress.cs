using System.Globalization;
using System.Text.Json.Nodes;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Runs;
using Microsoft.EntityFrameworkCore;
using Spectre.Console;

namespace HyperSd.Cli.Commands;

/// <summary>Follows a run until it ends — in the local store or through a deployment's API, both read as
/// <see cref="RunDetails"/>: Spectre progress bars on a terminal, plain lines otherwise.</summary>
public static class RunProgress
{
    static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(500);

    static bool Finished(RunSummary run) => run.State is RunState.Succeeded or RunState.Failed or RunState.Cancelled;

    /// <summary>The run as the store holds it now.</summary>
    public static Func<CancellationToken, Task<RunDetails>> FromStore(IDbContextFactory<MetadataDbContext> dbs, Guid runId) => async ct =>
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        return await RunQueries.ShowAsync(db, runId, ct) ?? throw new ArgumentException($"no run {runId} in the store");
    };

    /// <summary>Reads the run (<paramref name="read"/>) every half second until it ends; returns it as it ended.</summary>
    public static async Task<RunDetails> FollowAsync(Func<CancellationToken, Task<RunDetails>> read, CancellationToken ct)
    {
        var run = await read(ct);
        if (!Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive)
        {
            await AnsiConsole.Progress().AutoClear(false).HideCompleted(false)
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                    new SpinnerColumn())
                .StartAsync(async ctx =>
                {
                    var bars = run.Stages.ToDictionary(s => s.Index, s => ctx.AddTask(s.Name, autoStart: false, maxValue: 1));
                    while (true)
                    {
                        foreach (var stage in run.Stages)
                        {
                            var bar = bars[stage.Index];
                            bar.Description = Markup.Escape(Line(stage));
                            if (stage.State is StageState.Running or StageState.Dispatched && !bar.IsStarted) bar.StartTask();
                            bar.Value = stage.State == StageState.Succeeded ? 1 : stage.Progress;
                            if (stage.State is StageState.Succeeded or StageState.Failed or StageState.Cancelled && bar.IsStarted)
                                bar.StopTask();
                        }
                        if (Finished(run.Run)) break;
                        await Task.Delay(Poll, ct);
                        run = await read(ct);
                    }
                });
            return run;
        }

        var shown = new Dictionary<int, (StageState, int, int)>();
        while (true)
        {
            foreach (var stage in run.Stages)
            {
                var key = (stage.State, stage.Attempt, (int)(stage.Progress * 10));
                if (shown.TryGetValue(stage.Index, out var last) && last == key) continue;
                if (shown.ContainsKey(stage.Index) || stage.State != StageState.Pending)
                    Console.WriteLine($"{DateTime.Now:HH:mm:ss} {Line(stage)}");
                shown[stage.Index] = key;
            }
            if (Finished(run.Run)) return run;
            await Task.Delay(Poll, ct);
            run = await read(ct);
        }
    }

    /// <summary>"tscd-k8 running #1 42% step 126/300 loss 0.0123 4.1 steps/s".</summary>
    public static string Line(StageView stage)
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

    /// <summary>Outcome, error, the evaluation table (null: none) and where the results are (<paramref name="where"/>: an
    /// artifact's store path → where to find it).</summary>
    public static void PrintResult(RunDetails details, string? evaluationTable, Func<string, string> where)
    {
        var run = details.Run;
        Console.WriteLine();
        Console.WriteLine($"run {run.Id} ({run.Name}): {run.State.ToString().ToLowerInvariant()}" +
                          (run.StartedAt is { } s && run.FinishedAt is { } f ? $" in {(f - s).TotalSeconds:F1} s" : ""));
        if (run.Error is { } error) Console.WriteLine($"error: {error}");
        if (evaluationTable is not null)
        {
            Console.WriteLine();
            Console.WriteLine(evaluationTable);
        }
        // the evaluation's report (the merge stage writes one too), the generator's images, the unified LoRA
        foreach (var (kind, label, stageKind) in new[]
                 {
                     (ArtifactKind.Report, "results", Services.Evaluator.EvaluateModelStage.Kind),
                     (ArtifactKind.Images, "images", Services.Generator.GenerateImagesStage.Kind),
                     (ArtifactKind.Lora, "unified lora", Services.LoraMerger.MergeLorasStage.Kind),
                 })
            if (details.Artifacts.FirstOrDefault(a => a.Kind == kind && (stageKind is null || a.StageKind == stageKind)) is { } artifact)
                Console.WriteLine($"{label}: {where(artifact.Path)}");
    }
}
