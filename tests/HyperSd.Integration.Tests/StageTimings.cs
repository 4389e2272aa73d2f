using System.Globalization;
using System.Text;
using HyperSd.Data.Entities;

namespace HyperSd.Integration.Tests;

/// <summary>A stage's wall time (its succeeded attempt, lease to finish, as its worker saw it) and the orchestration gap
/// before it (the previous stage's finish to this stage's lease: event, transition, command, input check).</summary>
public sealed record StageTiming(string Stage, double WallSeconds, double? GapSeconds);

public static class StageTimings
{
    public static List<StageTiming> Of(Run run, IReadOnlyList<StageAttempt> attempts)
    {
        var result = new List<StageTiming>();
        DateTimeOffset? previousEnd = null;
        foreach (var stage in run.Stages.OrderBy(s => s.Index))
        {
            var succeeded = attempts.Single(a => a.StageId == stage.Id && a.Outcome == AttemptOutcome.Succeeded);
            var end = succeeded.FinishedAt ?? throw new InvalidOperationException($"stage {stage.Name}: its succeeded attempt has no finish time");
            result.Add(new StageTiming(stage.Name, (end - succeeded.StartedAt).TotalSeconds,
                previousEnd is { } p ? (succeeded.StartedAt - p).TotalSeconds : null));
            previousEnd = end;
        }
        return result;
    }

    /// <summary>A markdown table comparing two runs of the same recipe, stage by stage, with totals.</summary>
    public static string Markdown(string leftName, Run leftRun, List<StageTiming> left, string rightName, Run rightRun, List<StageTiming> right)
    {
        static string F(double? v) => v is { } x ? x.ToString("F2", CultureInfo.InvariantCulture) : "–";
        var sb = new StringBuilder();
        sb.AppendLine($"| stage | {leftName} wall (s) | {rightName} wall (s) | {leftName} gap before (s) | {rightName} gap before (s) |");
        sb.AppendLine("| --- | ---: | ---: | ---: | ---: |");
        foreach (var (l, r) in left.Zip(right))
            sb.AppendLine($"| {l.Stage} | {F(l.WallSeconds)} | {F(r.WallSeconds)} | {F(l.GapSeconds)} | {F(r.GapSeconds)} |");
        sb.AppendLine($"| sum of stages | {F(left.Sum(t => t.WallSeconds))} | {F(right.Sum(t => t.WallSeconds))} | " +
                      $"{F(left.Sum(t => t.GapSeconds ?? 0))} | {F(right.Sum(t => t.GapSeconds ?? 0))} |");
        static double? Total(Run run) => run.StartedAt is { } s && run.FinishedAt is { } e ? (e - s).TotalSeconds : null;
        sb.AppendLine($"| whole run (start → finish) | {F(Total(leftRun))} | {F(Total(rightRun))} | | |");
        return sb.ToString();
    }
}
