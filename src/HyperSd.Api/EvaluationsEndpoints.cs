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
        string? Sampler, string? Metric, DateTimeOffset? From, DateTimeOffset? To, string? Format)
    {
        public EvaluationFilter Filter => new(Runs, Recipe, BaseModel, Stage, Model, Steps, Sampler, Metric, From, To);
    }

    public static void Map(IEndpointRouteBuilder api)
    {
        var evaluations = api.MapGroup("/evaluations").WithTags("evaluations");
        evaluations.MapGet("/", QueryAsync).Produces<Page<EvaluationRecord>>().Produces(StatusCodes.Status200OK, contentType: Csv.ContentType)
            .WithSummary("evaluation rows matching the filters, sorted (sort=created|value|steps|metric|run, desc=true) and paged");
        evaluations.MapGet("/compare", CompareAsync).Produces<RunComparison>().Produces(StatusCodes.Status200OK, contentType: Csv.ContentType)
            .WithSummary("two or more runs (runs=A&runs=B) side by side: a row per model, sampler, metric and steps, a value per run");
        evaluations.MapGet("/best", BestAsync).Produces<IReadOnlyList<BestRun>>()
            .Produces(StatusCodes.Status200OK, contentType: Csv.ContentType)
            .WithSummary("the best run for each metric and step count among the matching rows");
    }

    static async Task<IResult> QueryAsync(MetadataDbContext db, HttpRequest request, [AsParameters] FilterArgs args,
        EvaluationSort? sort, bool? desc, int? offset, int? limit, CancellationToken ct)
    {
        var csv = Csv.Wanted(request, args.Format);
        var page = await EvaluationQueries.QueryAsync(db, args.Filter, new Paging(offset ?? 0, limit ?? Paging.DefaultLimit),
            sort ?? EvaluationSort.Created, desc ?? false, ct);
        return csv ? Csv.Records(page.Items) : Results.Ok(page);
    }

    static async Task<IResult> CompareAsync(MetadataDbContext db, HttpRequest request, [AsParameters] FilterArgs args,
        CancellationToken ct)
    {
        var csv = Csv.Wanted(request, args.Format);
        if (args.Runs is not { Length: >= 2 })
            throw new InvalidFieldException("runs", $"name two or more runs to compare (runs=A&runs=B), got {args.Runs?.Length ?? 0}");
        var comparison = await EvaluationQueries.CompareAsync(db, args.Runs, args.Filter, ct);
        if (!csv) return Results.Ok(comparison);
        return Csv.Result(async w =>
        {
            foreach (var header in new[] { "model", "sampler", "metric", "steps" }) w.WriteField(header);
            // a column per run, named and identified (names repeat across runs of one recipe)
            foreach (var run in comparison.Runs) w.WriteField($"{run.Name} ({run.Id})");
            await w.EndRecordAsync();
            foreach (var row in comparison.Rows)
            {
                w.WriteField(row.Model);
                w.WriteField(row.Sampler);
                w.WriteField(row.Metric);
                w.WriteField(row.Steps);
                foreach (var value in row.Values) w.WriteField(value);
                await w.EndRecordAsync();
            }
        });
    }

    static async Task<IResult> BestAsync(MetadataDbContext db, HttpRequest request, [AsParameters] FilterArgs args, CancellationToken ct)
    {
        var csv = Csv.Wanted(request, args.Format);
        var best = await EvaluationQueries.BestAsync(db, args.Filter, ct);
        return csv ? Csv.Records(best) : Results.Ok(best);
    }
}
