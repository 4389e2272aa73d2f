using System.Globalization;
using System.Text;
using HyperSd.Data;
using HyperSd.Distillation.Evaluation;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Runs;

/// <summary>Evaluation rows as a Markdown table: one row per (run,) model and sampler, each metric at each step count.</summary>
public static class EvaluationTable
{
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
                ? r.Value.ToString(c.Metric == "fd" ? "F2" : "F3", CultureInfo.InvariantCulture) : "";
            sb.Append(byRun ? $"| {group.Key.Run} | " : "| ").Append($"{group.Key.Model} | {group.Key.Sampler} |")
                .AppendJoin("", columns.Select(c => $" {Cell(c)} |")).AppendLine();
        }
        return sb.ToString();
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
                new EvaluationRow(v.Model, v.Sampler, v.Steps, v.Metric, v.Value))));
    }
}
