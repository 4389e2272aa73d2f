using System.Text;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.StaticFiles;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Api;

/// <summary>The run's id and state after a submission, cancel or resume.</summary>
public sealed record RunStateView(Guid Id, RunState State);

/// <summary><c>/api/runs</c>: submit, list, show, cancel, resume, download artifacts — through the application layer the
/// CLI uses (<see cref="RunSubmission"/>, <see cref="RunQueries"/>, <see cref="RunControl"/>).</summary>
public static class RunsEndpoints
{
    /// <summary>The list's filters (query string).</summary>
    public sealed record ListArgs(string? Name, string? State, string? BaseModel, DateTimeOffset? From, DateTimeOffset? To,
        Guid? Schedule, int? Offset, int? Limit);

    public static void Map(IEndpointRouteBuilder api)
    {
        var runs = api.MapGroup("/runs").WithTags("runs");
        runs.MapGet("/", ListAsync).WithSummary("runs matching the filters, newest first, paged");
        runs.MapPost("/", SubmitAsync).RequireAuthorization(ApiHost.OperatePolicy)
            .Accepts<string>("application/yaml", "application/json", "text/yaml", "text/plain")
            .Produces<RunStateView>(StatusCodes.Status201Created)
            .WithSummary("submit a recipe (YAML, or the same as JSON); the run starts at once");
        runs.MapGet("/{id}", ShowAsync).WithSummary("a run: stages (attempts, progress, timings) and artifacts with lineage");
        runs.MapPost("/{id}/cancel", CancelAsync).RequireAuthorization(ApiHost.OperatePolicy).WithSummary("cancel a run");
        runs.MapPost("/{id}/resume", ResumeAsync).RequireAuthorization(ApiHost.OperatePolicy)
            .WithSummary("resume a failed or cancelled run from its first unfinished stage");
        runs.MapGet("/{id}/artifacts/{**path}", DownloadAsync)
            .WithSummary("download a file of one of the run's artifacts (its store path, or a file inside a folder artifact), streamed");
    }

    static async Task<Page<RunSummary>> ListAsync(MetadataDbContext db, [AsParameters] ListArgs args, CancellationToken ct) =>
        await RunQueries.ListAsync(db,
            new RunFilter(args.Name, QueryValues.Enum<RunState>(args.State, "state"), args.BaseModel, args.From, args.To, args.Schedule),
            new Paging(args.Offset ?? 0, args.Limit ?? Paging.DefaultLimit), ct);

    static async Task<IResult> SubmitAsync(HttpRequest request, RunSubmission submission, StageCatalogue catalogue,
        WorkerOptions workers, ApiOptions options, CancellationToken ct)
    {
        var recipe = await ReadBodyAsync(request, options.MaxRecipeBytes, ct);
        // planned (parsed, validated, every stage resolved) before anything is stored: a bad recipe leaves no trace
        var planned = RunSubmission.Plan(catalogue, recipe, "request body", workers.MaxAttempts);
        var id = await submission.SubmitAsync(planned, ct);
        return Results.Created($"/api/runs/{id}", new RunStateView(id, planned.Run.State));
    }

    /// <summary>The body as text, refusing one over <paramref name="limit"/> bytes before or while reading it.</summary>
    static async Task<string> ReadBodyAsync(HttpRequest request, long limit, CancellationToken ct)
    {
        if (request.ContentLength > limit) throw new BodyTooLargeException("body", limit);
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = await request.Body.ReadAsync(chunk, ct)) > 0)
        {
            if (buffer.Length + read > limit) throw new BodyTooLargeException("body", limit);
            buffer.Write(chunk, 0, read);
        }
        if (buffer.Length == 0) throw new InvalidFieldException("body", "empty: send the recipe as YAML or JSON");
        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    static async Task<RunDetails> ShowAsync(Guid id, MetadataDbContext db, CancellationToken ct) =>
        await RunQueries.ShowAsync(db, id, ct) ?? throw new UnknownIdException("id", id);

    static async Task<RunStateView> CancelAsync(Guid id, RunControl control, HttpContext context, CancellationToken ct) =>
        new(id, await control.CancelAsync(id, $"cancelled through the API by {context.User.Identity?.Name}", ct)
                ?? throw new UnknownIdException("id", id));

    static async Task<RunStateView> ResumeAsync(Guid id, RunControl control, CancellationToken ct) =>
        new(id, await control.ResumeAsync(id, ct) ?? throw new UnknownIdException("id", id));

    static readonly FileExtensionContentTypeProvider ContentTypes = new();

    static async Task<IResult> DownloadAsync(Guid id, string path, MetadataDbContext db, IArtifactStore artifacts, CancellationToken ct)
    {
        // The route value keeps encoded slashes ("..%2F"): decode them so they are checked as the separators they stand for.
        var relative = Uri.UnescapeDataString(path);
        if (!await db.Runs.AnyAsync(r => r.Id == id, ct)) throw new UnknownIdException("id", id);
        if (await RunQueries.ArtifactHoldingAsync(db, id, relative, ct) is null)
            throw new InvalidFieldException("path", $"'{relative}' is not an artifact of run {id} nor a file inside one");
        var full = artifacts.GetFullPath(relative);
        if (Directory.Exists(full))
            throw new InvalidFieldException("path", $"'{relative}' is a folder; name a file in it: " +
                string.Join(", ", Directory.EnumerateFiles(full, "*", SearchOption.AllDirectories).Take(20)
                    .Select(f => Path.GetRelativePath(artifacts.Root, f).Replace('\\', '/'))));
        if (!File.Exists(full)) throw new InvalidFieldException("path", $"'{relative}' is missing from the artifact store");
        var type = ContentTypes.TryGetContentType(full, out var t) ? t : "application/octet-stream";
        return Results.File(full, type, Path.GetFileName(full), enableRangeProcessing: true);
    }
}
