using System.CommandLine;
using HyperSd.Data;
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
/// SQLite, an artifact folder), with live progress and the evaluation table at the end.</summary>
public static class RunCommand
{
    public static readonly Option<bool> VerboseOption = new("--verbose") { Description = "log every stage's work to stderr" };

    public static Command Create()
    {
        var recipe = new Argument<FileInfo>("recipe") { Description = "the recipe YAML" };
        var command = new Command("run", "run a recipe end to end in this process (embedded store)")
        {
            recipe, RunStore.StoreDirOption, VerboseOption,
        };
        command.SetAction(async (parse, ct) =>
        {
            var store = RunStore.From(parse) with { Postgres = null, RabbitMq = null };
            // the recipe is read, validated and resolved before any host starts: a bad one is reported alone
            var planned = RunSubmission.Plan(StageCatalogue.Default(), parse.GetValue(recipe)!.FullName, new WorkerOptions().MaxAttempts);
            using var host = store.StartHost(allRoles: true, parse.GetValue(VerboseOption));
            var runId = await host.Services.GetRequiredService<RunSubmission>().SubmitAsync(planned, ct);
            Console.WriteLine($"run {runId}: store {store.StoreDir}");
            return await FollowToEndAsync(host, store, runId, ct);
        });
        return command;
    }

    /// <summary>Follows the run in an embedded host until it ends; on Ctrl+C cancels it (resume it with
    /// <c>hypersd runs resume</c>). Exit code 0 only if the run succeeded.</summary>
    public static async Task<int> FollowToEndAsync(IHost host, RunStore store, Guid runId, CancellationToken ct)
    {
        var dbs = host.Services.GetRequiredService<IDbContextFactory<MetadataDbContext>>();
        Run run;
        try
        {
            run = await RunProgress.FollowAsync(dbs, runId, ct);
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
        await RunProgress.PrintResultAsync(db, run, Path.Combine(store.StoreDir, "artifacts"));
        return run.State == RunState.Succeeded ? 0 : 1;
    }
}
