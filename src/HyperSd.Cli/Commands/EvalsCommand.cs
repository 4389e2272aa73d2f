using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using HyperSd.Api;
using HyperSd.Services.Runs;

namespace HyperSd.Cli.Commands;

public enum OutputFormat { Table, Csv, Json }

/// <summary><c>hypersd evals query|compare|best</c>: evaluation rows across runs, from the local store (the same queries the
/// API answers with, <see cref="EvaluationQueries"/>) or a deployment's API (<c>--api</c>); as a table, CSV or JSON.</summary>
public static class EvalsCommand
{
    static readonly Option<Guid[]> RunsOption = new("--run") { Description = "only these runs (repeat the option)",
        AllowMultipleArgumentsPerToken = true };
    static readonly Option<string?> RecipeOption = new("--recipe") { Description = "the recipe's name" };
    static readonly Option<string?> BaseModelOption = new("--base-model") { Description = "the run's base model (teacher)" };
    static readonly Option<string?> StageOption = new("--stage") { Description = "the evaluating stage's name" };
    static readonly Option<string?> ModelOption = new("--model") { Description = "the evaluated model (teacher, tscd-k4, ...)" };
    static readonly Option<int?> StepsOption = new("--steps") { Description = "sampling steps" };
    static readonly Option<string?> SamplerOption = new("--sampler") { Description = "the sampler (tcd, ddim-trailing, ...)" };
    static readonly Option<string?> MetricOption = new("--metric") { Description = "the metric (fd, adherence, ...)" };
    static readonly Option<DateTimeOffset?> FromOption = new("--from") { Description = "rows from this time (ISO 8601, inclusive)" };
    static readonly Option<DateTimeOffset?> ToOption = new("--to") { Description = "rows before this time (ISO 8601)" };
    static readonly Option<Guid?> ScheduleOption = new("--schedule") { Description = "runs started by this schedule" };

    static readonly Option<OutputFormat> FormatOption = new("--format")
    {
        Description = "table, csv or json", DefaultValueFactory = _ => OutputFormat.Table,
    };

    public static Command Create()
    {
        var command = new Command("evals", "query and compare evaluation results across runs (local store or --api)");
        command.Subcommands.Add(Query());
        command.Subcommands.Add(Compare());
        command.Subcommands.Add(Best());
        return command;
    }

    static Command WithSource(string name, string description, params Symbol[] symbols) =>
        RunStore.Subcommand(name, description, rabbitMq: false, api: true, [FormatOption, .. symbols]);

    static Symbol[] Filters(bool runs = true) =>
    [
        .. runs ? [RunsOption] : Array.Empty<Symbol>(), RecipeOption, BaseModelOption, StageOption, ModelOption, StepsOption, SamplerOption,
        MetricOption, FromOption, ToOption, ScheduleOption,
    ];

    static EvaluationFilter Filter(ParseResult p) => new(p.GetValue(RunsOption) is { Length: > 0 } runs ? runs : null,
        p.GetValue(RecipeOption), p.GetValue(BaseModelOption), p.GetValue(StageOption), p.GetValue(ModelOption), p.GetValue(StepsOption),
        p.GetValue(SamplerOption), p.GetValue(MetricOption), p.GetValue(FromOption), p.GetValue(ToOption), p.GetValue(ScheduleOption));

    static Command Query()
    {
        var sort = new Option<EvaluationSort>("--sort") { Description = "created, value, steps, metric or run",
            DefaultValueFactory = _ => EvaluationSort.Created };
        var desc = new Option<bool>("--desc") { Description = "sort descending" };
        var offset = new Option<int>("--offset") { Description = "rows to skip", DefaultValueFactory = _ => 0 };
        var limit = new Option<int>("--limit") { Description = $"rows to show (at most {Paging.MaxLimit})",
            DefaultValueFactory = _ => Paging.DefaultLimit };
        var command = WithSource("query", "evaluation rows matching the filters, sorted and paged", [.. Filters(), sort, desc, offset,
            limit]);
        command.SetAction(async (parse, ct) =>
        {
            var filter = Filter(parse);
            var paging = new Paging(parse.GetValue(offset), parse.GetValue(limit));
            var (by, descending) = (parse.GetValue(sort), parse.GetValue(desc));
            var page = await FromSourceAsync(parse,
                api => api.QueryEvaluationsAsync(filter, paging, by, descending, ct),
                db => EvaluationQueries.QueryAsync(db, filter, paging, by, descending, ct));
            await WriteAsync(Console.Out, page, parse.GetValue(FormatOption));
        });
        return command;
    }

    static Command Compare()
    {
        var runs = new Argument<Guid[]>("runs") { Description = "two or more run ids", Arity = new ArgumentArity(2, 100) };
        var command = WithSource("compare", "runs side by side: a row per model, sampler, metric and steps, a value per run",
            [runs, .. Filters(runs: false)]);
        command.SetAction(async (parse, ct) =>
        {
            var (ids, filter) = (parse.GetValue(runs)!, Filter(parse));
            var comparison = await FromSourceAsync(parse, api => api.CompareAsync(ids, filter, ct),
                db => EvaluationQueries.CompareAsync(db, ids, filter, ct));
            await WriteAsync(Console.Out, comparison, parse.GetValue(FormatOption));
        });
        return command;
    }

    static Command Best()
    {
        var command = WithSource("best",
            "the best run for each metric and step count among the matching rows, and whether its interval stands apart", Filters());
        command.SetAction(async (parse, ct) =>
        {
            var filter = Filter(parse);
            var best = await FromSourceAsync(parse, api => api.BestAsync(filter, ct), db => EvaluationQueries.BestAsync(db, filter, ct));
            await WriteAsync(Console.Out, best, parse.GetValue(FormatOption));
        });
        return command;
    }

    /// <summary>The answer from the deployment's API when --api is given, else from the local store.</summary>
    static async Task<T> FromSourceAsync<T>(ParseResult parse, Func<ApiClient, Task<T>> remote,
        Func<HyperSd.Data.MetadataDbContext, Task<T>> local)
    {
        if (ApiClient.From(parse) is { } api)
            using (api)
                return await remote(api);
        await using var db = await RunStore.From(parse).OpenAsync();
        return await local(db);
    }

    // --- output: the table for people, CSV as the API writes it, JSON as the API answers

    public static async Task WriteAsync(TextWriter output, Page<EvaluationRecord> page, OutputFormat format)
    {
        switch (format)
        {
            case OutputFormat.Csv:
                await Csv.WriteAsync(output, page.Items, EvaluationsEndpoints.RecordColumns);
                break;
            case OutputFormat.Json:
                await WriteJsonAsync(output, page);
                break;
            default:
                WriteTable(output, ["run", "id", "stage", "model", "sampler", "steps", "metric", "value", "created"],
                    page.Items.Select(r => new[]
                    {
                        r.Run, r.RunId.ToString()[..8], r.Stage, r.Model, r.Sampler, Number(r.Steps), r.Metric,
                        EvaluationTable.Format(r.Metric, r.Value, r.Low, r.High), r.CreatedAt.ToLocalTime().ToString("yyyy-MM-dd HH:mm",
                            CultureInfo.InvariantCulture),
                    }));
                await output.WriteLineAsync(
                    $"rows {page.Offset + (page.Items.Count == 0 ? 0 : 1)}–{page.Offset + page.Items.Count} of {page.Total}");
                break;
        }
    }

    public static async Task WriteAsync(TextWriter output, RunComparison comparison, OutputFormat format)
    {
        switch (format)
        {
            case OutputFormat.Csv:
                await Csv.WriteAsync(output, comparison.Rows, EvaluationsEndpoints.ComparisonColumns(comparison));
                break;
            case OutputFormat.Json:
                await WriteJsonAsync(output, comparison);
                break;
            default:
                WriteTable(output,
                    ["model", "sampler", "metric", "steps", .. comparison.Runs.Select(r => $"{r.Name} ({r.Id.ToString()[..8]})")],
                    comparison.Rows.Select(r => (string[])[r.Model, r.Sampler, r.Metric, Number(r.Steps),
                        .. r.Values.Select((v, i) => v is { } x
                            ? EvaluationTable.Format(r.Metric, x, r.Intervals[i]?.Low, r.Intervals[i]?.High) : "")]));
                break;
        }
    }

    public static async Task WriteAsync(TextWriter output, IReadOnlyList<BestRun> best, OutputFormat format)
    {
        switch (format)
        {
            case OutputFormat.Csv:
                await Csv.WriteAsync(output, best, EvaluationsEndpoints.BestColumns);
                break;
            case OutputFormat.Json:
                await WriteJsonAsync(output, best);
                break;
            default:
                WriteTable(output, ["metric", "steps", "best", "run", "id", "model", "sampler", "value", "apart"],
                    best.Select(b => new[]
                    {
                        b.Metric, Number(b.Steps), b.LowerIsBetter ? "lowest" : "highest", b.Run, b.RunId.ToString()[..8], b.Model,
                        b.Sampler, EvaluationTable.Format(b.Metric, b.Value, b.Low, b.High),
                        b.Others == 0 ? "alone" : b.StandsApart ? $"yes, of {b.Others + 1}" : $"no: {b.Overlapping} of {b.Others} overlap",
                    }));
                break;
        }
    }

    static string Number(int n) => n.ToString(CultureInfo.InvariantCulture);

    static async Task WriteJsonAsync<T>(TextWriter output, T value) =>
        await output.WriteLineAsync(JsonSerializer.Serialize(value, new JsonSerializerOptions(ApiClient.Json) { WriteIndented = true }));

    /// <summary>Columns padded to their widest cell; numbers right-aligned.</summary>
    public static void WriteTable(TextWriter output, IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string>> rows)
    {
        var all = rows.ToList();
        var widths = headers.Select((h, i) => all.Select(r => r[i].Length).Append(h.Length).Max()).ToList();
        var numeric = headers.Select((_, i) => all.Count > 0 && all.All(r => r[i].Length == 0 ||
            double.TryParse(r[i], NumberStyles.Float, CultureInfo.InvariantCulture, out double _))).ToList();
        string Line(IReadOnlyList<string> cells) =>
            string.Join("  ", cells.Select((c, i) => numeric[i] ? c.PadLeft(widths[i]) : c.PadRight(widths[i]))).TrimEnd();
        output.WriteLine(Line(headers));
        foreach (var row in all) output.WriteLine(Line(row));
    }
}
