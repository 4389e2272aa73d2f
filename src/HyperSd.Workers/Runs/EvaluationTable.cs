using System.Globalization;
using System.Text;
using HyperSd.Distillation.Evaluation;

namespace HyperSd.Workers.Runs;

/// <summary>Evaluation rows as a Markdown table: one row per model and sampler, each metric at each step count.</summary>
public static class EvaluationTable
{
    public static string Markdown(IEnumerable<EvaluationRow> rows)
    {
        var all = rows.ToList();
        var steps = all.Select(r => r.Steps).Distinct().Order().ToList();
        var metrics = all.Select(r => r.Metric).Distinct().OrderBy(m => m == "fd" ? 0 : m == "adherence" ? 1 : 2).ThenBy(m => m).ToList();
        var columns = metrics.SelectMany(m => steps.Select(s => (Metric: m, Steps: s))).ToList();
        var sb = new StringBuilder();
        sb.Append("| model | sampler |").AppendJoin("", columns.Select(c => $" {c.Metric}@{c.Steps} |")).AppendLine();
        sb.Append("| --- | --- |").AppendJoin("", columns.Select(_ => " ---: |")).AppendLine();
        foreach (var group in all.GroupBy(r => (r.Model, r.Sampler)))
        {
            string Cell((string Metric, int Steps) c) => group.FirstOrDefault(r => r.Metric == c.Metric && r.Steps == c.Steps) is { } r
                ? r.Value.ToString(c.Metric == "fd" ? "F2" : "F3", CultureInfo.InvariantCulture) : "";
            sb.Append($"| {group.Key.Model} | {group.Key.Sampler} |").AppendJoin("", columns.Select(c => $" {Cell(c)} |")).AppendLine();
        }
        return sb.ToString();
    }
}
