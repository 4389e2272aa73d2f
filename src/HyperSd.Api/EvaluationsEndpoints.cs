using HyperSd.Data;
using HyperSd.Services.Runs;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace HyperSd.Api;

/// <summary><c>/api/evaluations</c>: the rows across runs (filters, sort, paging), runs side by side, the best run per
/// metric and step count; JSON, or CSV with <c>?format=csv</c> or <c>Accept: text/csv</c>.</summary>
public static class EvaluationsEndpoints
{
    /// <summary>The filters (query string); <see cref="Runs"/> repeats (<c>runs=A&amp;runs=B</c>).</summary>
    public sealed record FilterArgs(Guid[]? Runs, string? Recipe, string? BaseModel, string? Stage, string? Model, int? Steps,
        string? Sampler, string? Metric, DateTimeOffset? From, DateTimeOffset? To, Guid? Schedule, string? Format)
    {
        public EvaluationFilter Filter => new(Runs, Recipe, BaseModel, Stage, Model, Steps, Sampler, Metric, From, To, Schedule);
    }

    public static void Map(IEndpointRouteBuilder api)
    {
        var evaluations = api.MapGroup("/evaluations").WithTags("evaluations");
        evaluations.MapGet("/", QueryAsync).Produces<Page<EvaluationRecord>>()
            .Produces(StatusCodes.Status200OK, contentType: Csv.ContentType)
            .WithSummary("evaluation rows matching the filters, sorted (sort=created|value|steps|metric|run, desc=true) and paged");
        evaluations.MapGet("/compare", CompareAsync).Produces<RunComparison>()
            .Produces(StatusCodes.Status200OK, contentType: Csv.ContentType)
            .WithSummary("two or more runs (runs=A&runs=B) side by side: a row per model, sampler, metric and steps, a value per run");
        evaluations.MapGet("/best", BestAsync).Produces<IReadOnlyList<BestRun>>()
            .Produces(StatusCodes.Status200OK, contentType: Csv.ContentType)
            .WithSummary("the best run for each metric and step count among the matching rows");
    }

    static async Task<IResult> QueryAsync(MetadataDbContext db, HttpRequest request, [AsParameters] FilterArgs args,
        string? sort, bool? desc, int? offset, int? limit, CancellationToken ct)
    {
        var csv = Csv.Wanted(request, args.Format);
        var page = await EvaluationQueries.QueryAsync(db, args.Filter, new Paging(offset ?? 0, limit ?? Paging.DefaultLimit),
            QueryValues.Enum<EvaluationSort>(sort, "sort") ?? EvaluationSort.Created, desc ?? false, ct);
        return csv ? Csv.Table(page.Items, RecordColumns) : Results.Ok(page);
    }

    static async Task<IResult> CompareAsync(MetadataDbContext db, HttpRequest request, [AsParameters] FilterArgs args,
        CancellationToken ct)
    {
        var csv = Csv.Wanted(request, args.Format);
        if (args.Runs is not { Length: >= 2 })
            throw new InvalidFieldException("runs", $"name two or more runs to compare (runs=A&runs=B), got {args.Runs?.Length ?? 0}");
        var comparison = await EvaluationQueries.CompareAsync(db, args.Runs, args.Filter, ct);
        return csv ? Csv.Table(comparison.Rows, ComparisonColumns(comparison)) : Results.Ok(comparison);
    }

    /// <summary>A column per run, named and identified (names repeat across runs of one recipe).</summary>
    public static IReadOnlyList<CsvColumn<ComparisonRow>> ComparisonColumns(RunComparison comparison) =>
    [
        Csv.Text<ComparisonRow>("model", r => r.Model), Csv.Text<ComparisonRow>("sampler", r => r.Sampler),
        Csv.Text<ComparisonRow>("metric", r => r.Metric), Csv.Integer<ComparisonRow>("steps", r => r.Steps),
        .. comparison.Runs.Select((run, i) => Csv.Number<ComparisonRow>($"{run.Name} ({run.Id})", r => r.Values[i])),
    ];

    public static readonly IReadOnlyList<CsvColumn<EvaluationRecord>> RecordColumns =
    [
        Csv.Id<EvaluationRecord>("runId", r => r.RunId), Csv.Text<EvaluationRecord>("run", r => r.Run),
        Csv.Text<EvaluationRecord>("recipe", r => r.Recipe), Csv.Text<EvaluationRecord>("baseModel", r => r.BaseModel),
        Csv.Text<EvaluationRecord>("stage", r => r.Stage), Csv.Text<EvaluationRecord>("model", r => r.Model),
        Csv.Text<EvaluationRecord>("sampler", r => r.Sampler), Csv.Integer<EvaluationRecord>("steps", r => r.Steps),
        Csv.Text<EvaluationRecord>("metric", r => r.Metric), Csv.Number<EvaluationRecord>("value", r => r.Value),
        Csv.Number<EvaluationRecord>("low", r => r.Low), Csv.Number<EvaluationRecord>("high", r => r.High),
        Csv.Time<EvaluationRecord>("createdAt", r => r.CreatedAt),
    ];

    public static readonly IReadOnlyList<CsvColumn<BestRun>> BestColumns =
    [
        Csv.Text<BestRun>("metric", r => r.Metric), Csv.Integer<BestRun>("steps", r => r.Steps),
        Csv.Flag<BestRun>("lowerIsBetter", r => r.LowerIsBetter), Csv.Id<BestRun>("runId", r => r.RunId),
        Csv.Text<BestRun>("run", r => r.Run), Csv.Text<BestRun>("model", r => r.Model), Csv.Text<BestRun>("sampler", r => r.Sampler),
        Csv.Number<BestRun>("value", r => r.Value), Csv.Number<BestRun>("low", r => r.Low), Csv.Number<BestRun>("high", r => r.High),
        Csv.Integer<BestRun>("overlapping", r => r.Overlapping), Csv.Integer<BestRun>("others", r => r.Others),
    ];

    static async Task<IResult> BestAsync(MetadataDbContext db, HttpRequest request, [AsParameters] FilterArgs args, CancellationToken ct)
    {
        var csv = Csv.Wanted(request, args.Format);
        var best = await EvaluationQueries.BestAsync(db, args.Filter, ct);
        return csv ? Csv.Table(best, BestColumns) : Results.Ok(best);
    }
}
