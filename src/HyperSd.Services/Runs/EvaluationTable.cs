using System.Globalization;
using System.Text;
using HyperSd.Data;
using HyperSd.Distillation.Evaluation;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Runs;

/// <summary>Evaluation rows as a Markdown table: one row per (run,) model and sampler, each metric at each step count.</summary>
public static class EvaluationTable
{
    /// <summary>A metric's value as the tables show it: Fréchet distances (hundreds) to 2 decimals, KID (near 0) to 4, rates
    /// and scores to 3.</summary>
    public static string Format(string metric, double value) =>
        value.ToString(metric.StartsWith("kid", StringComparison.Ordinal) ? "F4" : EvaluationQueries.LowerIsBetter(metric) ? "F2" : "F3",
            CultureInfo.InvariantCulture);

    /// <summary>The value with its 95 % interval when it has one: "0.082 [0.051, 0.124]".</summary>
    public static string Format(string metric, double value, double? low, double? high) =>
        low is { } l && high is { } h ? $"{Format(metric, value)} [{Format(metric, l)}, {Format(metric, h)}]" : Format(metric, value);

    public static string Markdown(IEnumerable<EvaluationRow> rows) => Markdown(rows.Select(r => ((string?)null, r)));

    /// <summary>Rows of several runs side by side, a run column first when any row names its run.</summary>
    public static string Markdown(IEnumerable<(string? Run, EvaluationRow Row)> rows)
    {
        var all = rows.ToList();
        bool byRun = all.Any(r => r.Run is not null);
        var steps = all.Select(r => r.Row.Steps).Distinct().Order().ToList();
        var metrics = EvaluationQueries.InDisplayOrder(all.Select(r => r.Row.Metric).Distinct()).ToList();
        var columns = metrics.SelectMany(m => steps.Select(s => (Metric: m, Steps: s))).ToList();
        var sb = new StringBuilder();
        sb.Append(byRun ? "| run | model | sampler |" : "| model | sampler |")
            .AppendJoin("", columns.Select(c => $" {c.Metric}@{c.Steps} |")).AppendLine();
        sb.Append(byRun ? "| --- | --- | --- |" : "| --- | --- |").AppendJoin("", columns.Select(_ => " ---: |")).AppendLine();
        foreach (var group in all.GroupBy(r => (r.Run, r.Row.Model, r.Row.Sampler)))
        {
            string Cell((string Metric, int Steps) c) =>
                group.FirstOrDefault(r => r.Row.Metric == c.Metric && r.Row.Steps == c.Steps) is { Row: { } r }
                ? Format(c.Metric, r.Value, r.Low, r.High) : "";
            sb.Append(byRun ? $"| {group.Key.Run} | " : "| ").Append($"{group.Key.Model} | {group.Key.Sampler} |")
                .AppendJoin("", columns.Select(c => $" {Cell(c)} |")).AppendLine();
        }
        return sb.ToString();
    }

    /// <summary>Queried rows (<see cref="EvaluationQueries"/>, the API's answers) as the table; null if none.</summary>
    public static string? Of(IReadOnlyList<EvaluationRecord> records)
    {
        if (records.Count == 0) return null;
        var runs = records.Select(r => r.RunId).Distinct().ToList();
        return Markdown(records.OrderBy(r => runs.IndexOf(r.RunId)).ThenBy(r => r.Model, StringComparer.Ordinal)
            .ThenBy(r => r.Sampler, StringComparer.Ordinal)
            .Select(r => (runs.Count > 1 ? r.Run : null,
                new EvaluationRow(r.Model, r.Sampler, r.Steps, r.Metric, r.Value, r.Low, r.High))));
    }

    /// <summary>The stored evaluation rows of the runs, in the runs' order (a run column when there are several); null if none.</summary>
    public static async Task<string?> QueryAsync(MetadataDbContext db, IReadOnlyList<Guid> runIds, CancellationToken ct = default)
    {
        var names = await db.Runs.AsNoTracking().Where(r => runIds.Contains(r.Id)).ToDictionaryAsync(r => r.Id, r => r.Name, ct);
        var rows = await db.Evaluations.AsNoTracking().Where(v => runIds.Contains(v.RunId)).ToListAsync(ct);
        if (rows.Count == 0) return null;
        return Markdown(rows.OrderBy(v => runIds.ToList().IndexOf(v.RunId)).ThenBy(v => v.Model, StringComparer.Ordinal)
            .ThenBy(v => v.Sampler, StringComparer.Ordinal)
            .Select(v => (runIds.Count > 1 ? names.GetValueOrDefault(v.RunId) : null,
                new EvaluationRow(v.Model, v.Sampler, v.Steps, v.Metric, v.Value, v.Low, v.High))));
    }
}
