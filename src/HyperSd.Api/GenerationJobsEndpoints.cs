using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.Jobs;
using HyperSd.Services.Runs;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace HyperSd.Api;

/// <summary>A submitted job: its id, name and run, its size (the images requested, and the candidates it makes of them:
/// as many with best_of 1), and the prompts truncated to the text encoder's length.</summary>
public sealed record GenerationJobCreated(Guid Id, string Name, int Images, int Chunks, IReadOnlyList<string> Warnings, int Candidates);

/// <summary>A job's state after a cancel or resume.</summary>
public sealed record GenerationJobStateView(Guid Id, RunState State);

/// <summary><c>/api/generation-jobs</c>: submit, list, show, cancel, resume, and the results as a manifest or a zip,
/// streamed — through the application layer the CLI uses (<see cref="GenerationJobs"/>).</summary>
public static class GenerationJobsEndpoints
{
    public static void Map(IEndpointRouteBuilder api)
    {
        var jobs = api.MapGroup("/generation-jobs").WithTags("generation jobs");
        jobs.MapPost("/", SubmitAsync).RequireAuthorization(ApiHost.OperatePolicy)
            .Produces<GenerationJobCreated>(StatusCodes.Status201Created)
            .WithSummary("submit a job (JSON: model, loras, prompts as rows, images per prompt, sampler, size, seeds, chunk size; " +
                         "bestOf, reward, score and rewardFiles for best-of-n by a reward's score); it starts at once");
        jobs.MapGet("/", (GenerationJobs j, CancellationToken ct) => j.ListAsync(ct)).WithSummary("jobs with their progress, newest first");
        jobs.MapGet("/{id}", async (Guid id, GenerationJobs j, CancellationToken ct) =>
                await j.ShowAsync(id, ct) ?? throw new UnknownIdException("id", id, "generation job"))
            .WithSummary("a job's progress: images done of the total, images/s, ETA");
        jobs.MapPost("/{id}/cancel", async (Guid id, GenerationJobs j, CancellationToken ct) =>
                new GenerationJobStateView(id, await j.CancelAsync(id, ct) ?? throw new UnknownIdException("id", id, "generation job")))
            .RequireAuthorization(ApiHost.OperatePolicy).WithSummary("cancel a job (what is done stays)");
        jobs.MapPost("/{id}/resume", async (Guid id, GenerationJobs j, CancellationToken ct) =>
                new GenerationJobStateView(id, await j.ResumeAsync(id, ct) ?? throw new UnknownIdException("id", id, "generation job")))
            .RequireAuthorization(ApiHost.OperatePolicy).WithSummary("resume a cancelled or failed job (what is recorded is skipped)");
        jobs.MapGet("/{id}/manifest", (Guid id, GenerationJobs j) => Stream(id, j, "application/x-ndjson", null, j.WriteManifestAsync))
            .WithSummary("manifest.jsonl: one line per kept image (prompt, indices, seed, file, sha256; with a reward its score, " +
                         "and best-of-n's candidates' scores), streamed");
        jobs.MapGet("/{id}/zip", (Guid id, GenerationJobs j) => Stream(id, j, "application/zip", $"{id}.zip", j.WriteZipAsync))
            .WithSummary("the job's kept images and manifest.jsonl as a zip, streamed");
    }

    static async Task<IResult> SubmitAsync(GenerationJobSpec spec, GenerationJobs jobs, ApiOptions options, WorkerOptions workers,
        CancellationToken ct)
    {
        // validated (and every image planned) before anything is stored: a bad job leaves no trace
        var plan = GenerationJobPlanner.Plan(await jobs.ResolveAsync(spec, ct), new GenerationLimits(MaxImageSide: options.MaxImageSide),
            workers.Inputs);
        var id = await jobs.SubmitAsync(plan, ct);
        return Results.Created($"/api/generation-jobs/{id}", new GenerationJobCreated(id, plan.Name, plan.Images.Count, plan.Chunks.Count,
            plan.Warnings, plan.Candidates.Count));
    }

    /// <summary>Checks the job exists before the response starts (a 404 cannot follow a started body), then streams.</summary>
    static async Task<IResult> Stream(Guid id, GenerationJobs jobs, string type, string? name, Func<Guid, Stream, CancellationToken,
        Task> write)
    {
        _ = await jobs.ShowAsync(id) ?? throw new UnknownIdException("id", id, "generation job");
        return Results.Stream(body => write(id, body, CancellationToken.None), type, name);
    }
}
