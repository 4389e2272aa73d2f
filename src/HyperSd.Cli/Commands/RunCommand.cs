using System.CommandLine;
using HyperSd.Data;
using HyperSd.Diffusion;
using HyperSd.Recipes;
using HyperSd.Data.Entities;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.Hosting;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd run recipe.yaml</c>: the whole run in this process on the embedded default (in-memory bus,
/// SQLite, an artifact folder), with live progress and the evaluation table at the end; with <c>--api</c>, submitted to a
/// deployment and followed there the same way.</summary>
public static class RunCommand
{
    public static readonly Option<bool> VerboseOption = new("--verbose") { Description = "log every stage's work to stderr" };

    public static Command Create()
    {
        var recipe = new Argument<FileInfo>("recipe") { Description = "the recipe YAML" };
        var command = new Command("run", "run a recipe end to end in this process (embedded store), or on a deployment (--api)")
        {
            recipe, RunStore.StoreDirOption, VerboseOption,
        };
        ApiClient.AddOptions(command);
        command.SetAction(async (parse, ct) =>
        {
            var file = parse.GetValue(recipe)!.FullName;
            // the recipe is read and validated before any host starts or request goes out: a bad one is reported alone; the
            // files it names are the deployment's to check (under its roots), or this process's on the embedded store
            if (ApiClient.From(parse) is { } api)
                using (api)
                {
                    RecipeLoader.Load(file);
                    return await RunRemoteAsync(api, await File.ReadAllTextAsync(file, ct), ct);
                }
            var store = RunStore.From(parse) with { Postgres = null, RabbitMq = null };
            var planned = RunSubmission.Plan(StageCatalogue.Default(), file, store.Options([]));
            using var host = store.StartHost(allRoles: true, parse.GetValue(VerboseOption));
            var runId = await host.Services.GetRequiredService<RunSubmission>().SubmitAsync(planned, ct);
            Console.WriteLine($"run {runId}: store {store.StoreDir}");
            if (NativeAllocator.Advice is { } advice) Console.Error.WriteLine($"note: {advice}");
            return await FollowToEndAsync(host, store, runId, ct);
        });
        return command;
    }

    /// <summary>Submits to the deployment and follows the run there; Ctrl+C stops following (the run goes on).</summary>
    static async Task<int> RunRemoteAsync(ApiClient api, string recipeYaml, CancellationToken ct)
    {
        var runId = await api.SubmitRunAsync(recipeYaml, ct);
        Console.WriteLine($"run {runId}: submitted to {api.BaseAddress}");
        RunDetails run;
        try
        {
            run = await RunProgress.FollowAsync(c => api.ShowRunAsync(runId, c), ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            Console.Error.WriteLine($"hypersd: stopped following run {runId}; it goes on in the deployment " +
                                    $"(hypersd runs cancel {runId} stops it)");
            return 130;
        }
        var rows = await api.QueryEvaluationsAsync(new EvaluationFilter(Runs: [runId]), new Paging(0, Paging.MaxLimit),
            EvaluationSort.Created, false, CancellationToken.None);
        RunProgress.PrintResult(run, EvaluationTable.Of(rows.Items), path => new Uri(api.BaseAddress,
            $"api/runs/{runId}/artifacts/{path}").ToString());
        return run.Run.State == RunState.Succeeded ? 0 : 1;
    }

    /// <summary>Follows the run in an embedded host until it ends; on Ctrl+C cancels it (resume it with
    /// <c>hypersd runs resume</c>). Exit code 0 only if the run succeeded.</summary>
    public static async Task<int> FollowToEndAsync(IHost host, RunStore store, Guid runId, CancellationToken ct)
    {
        var dbs = host.Services.GetRequiredService<IDbContextFactory<MetadataDbContext>>();
        RunDetails run;
        try
        {
            run = await RunProgress.FollowAsync(RunProgress.FromStore(dbs, runId), ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            await host.Services.GetRequiredService<RunLifecycle>().CancelAsync(runId, "interrupted", DateTimeOffset.UtcNow);
            Console.Error.WriteLine($"hypersd: run {runId} interrupted and cancelled; continue it with: hypersd runs resume {runId}");
            await host.StopAsync(CancellationToken.None);
            return 130;
        }
        await host.StopAsync(CancellationToken.None);
        await using var db = await dbs.CreateDbContextAsync(CancellationToken.None);
        var artifacts = Path.Combine(store.StoreDir, "artifacts");
        RunProgress.PrintResult(run, await EvaluationTable.QueryAsync(db, [runId]), path => Path.Combine(artifacts, path));
        return run.Run.State == RunState.Succeeded ? 0 : 1;
    }
}
