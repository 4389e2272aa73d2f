using System.CommandLine;
using System.Globalization;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd runs list|show|cancel|resume</c> against the embedded store or a deployment.</summary>
public static class RunsCommand
{
    public static Command Create()
    {
        var command = new Command("runs", "list, inspect, cancel and resume runs");
        command.Subcommands.Add(Submit());
        command.Subcommands.Add(List());
        command.Subcommands.Add(Show());
        command.Subcommands.Add(Cancel());
        command.Subcommands.Add(Resume());
        return command;
    }

    static Command WithStore(string name, string description, params Symbol[] symbols)
    {
        var command = new Command(name, description) { RunStore.StoreDirOption, RunStore.PostgresOption, RunStore.RabbitMqOption };
        foreach (var s in symbols)
            if (s is Argument a) command.Arguments.Add(a);
            else command.Options.Add((Option)s);
        return command;
    }

    static Argument<Guid> RunId() => new("run-id") { Description = "the run's id" };

    static Command List()
    {
        var command = WithStore("list", "the runs, newest first");
        command.SetAction(async (parse, ct) =>
        {
            await using var db = await RunStore.From(parse).OpenAsync();
            var now = DateTimeOffset.UtcNow;
            Console.WriteLine($"{"id",-36}  {"name",-20}  {"state",-9}  {"stage",-12}  {"created",-19}  duration");
            for (var paging = new Paging(0, Paging.MaxLimit); ; paging = paging with { Offset = paging.Offset + paging.Limit })
            {
                var page = await RunQueries.ListAsync(db, new RunFilter(), paging, ct);
                foreach (var r in page.Items)
                    Console.WriteLine($"{r.Id,-36}  {r.Name,-20}  {r.State.ToString().ToLowerInvariant(),-9}  " +
                                      $"{r.CurrentStage ?? "",-12}  " +
                                      $"{r.CreatedAt.ToLocalTime():yyyy-MM-dd HH:mm:ss}  {Seconds(r.Duration(now))}");
                if (paging.Offset + page.Items.Count >= page.Total) break;
            }
        });
        return command;
    }

    static Command Show()
    {
        var id = RunId();
        var command = WithStore(
            "show", "a run's stages (state, attempts, progress, timings and orchestration gaps), artifacts and evaluations", id);
        command.SetAction(async (parse, ct) =>
        {
            var store = RunStore.From(parse);
            await using var db = await store.OpenAsync();
            var runId = parse.GetValue(id);
            var details = await RunQueries.ShowAsync(db, runId, ct) ?? throw new ArgumentException($"no run {runId} in the store");
            var run = details.Run;
            Console.WriteLine($"run {run.Id} ({run.Name}): {run.State.ToString().ToLowerInvariant()}, " +
                              $"created {run.CreatedAt.ToLocalTime():yyyy-MM-dd HH:mm:ss}" +
                              $", duration {Seconds(run.FinishedAt is null ? null : run.Duration(DateTimeOffset.UtcNow))}");
            if (run.Error is { } error) Console.WriteLine($"error: {error}");
            Console.WriteLine();
            // gap: from the previous stage's end (as its worker saw it) to this stage's lease — the orchestration overhead
            Console.WriteLine($"{"stage",-14} {"role",-21} {"state",-10} {"att",3} {"progress",8} {"gap",8} {"duration",9}  detail");
            foreach (var s in details.Stages)
            {
                var gap = s.Gap is { } g ? $"{g.TotalSeconds:F2}s" : "";
                Console.WriteLine($"{s.Name,-14} {s.Role,-21} {s.State.ToString().ToLowerInvariant(),-10} {s.Attempt,3} " +
                                  $"{s.Progress.ToString("P0", CultureInfo.InvariantCulture),8} {gap,8} " +
                                  $"{Seconds(s.Duration),9}  " +
                                  $"{s.Error ?? s.ProgressDetail}");
            }
            if (details.Artifacts.Count > 0)
            {
                Console.WriteLine();
                foreach (var a in details.Artifacts)
                    Console.WriteLine($"{a.Kind.ToString().ToLowerInvariant(),-12} {a.SizeBytes,12:N0} B  {a.Sha256[..12]}  {a.Path}");
            }
            if (await EvaluationTable.QueryAsync(db, [runId]) is { } table)
            {
                Console.WriteLine();
                Console.WriteLine(table);
            }
        });
        return command;
    }

    static Command Submit()
    {
        var recipe = new Argument<FileInfo>("recipe") { Description = "the recipe YAML" };
        var command = WithStore("submit", "submit a recipe to a deployment (--postgres and --rabbitmq); prints the run's id", recipe);
        command.SetAction(async (parse, ct) =>
        {
            var store = RunStore.From(parse);
            if (store.Embedded || store.Postgres is null)
                throw new ArgumentException("runs submit sends a run to a deployment: give --postgres and --rabbitmq " +
                                            "(hypersd run runs a recipe in this process)");
            using var host = store.StartHost(allRoles: false, verbose: false);
            var runId = await host.Services.GetRequiredService<RunSubmission>().SubmitAsync(parse.GetValue(recipe)!.FullName, ct);
            await host.StopAsync(CancellationToken.None);
            Console.WriteLine(runId);
        });
        return command;
    }

    static Command Cancel()
    {
        var id = RunId();
        var command = WithStore("cancel", "cancel a run (its stages stop at their next heartbeat)", id);
        command.SetAction(async (parse, ct) =>
        {
            var store = RunStore.From(parse);
            var runId = parse.GetValue(id);
            if (!store.Embedded)
            {
                await SendAsync(store, new CancelRun(runId, "cancelled from the command line"), ct);
                Console.WriteLine($"cancel sent for run {runId}");
                return;
            }
            await using (await store.OpenAsync()) { }
            var dbs = new StoreFactory(store);
            await new RunLifecycle(dbs, StageCatalogue.Default(), store.Options([]), NullLogger<RunLifecycle>.Instance)
                .CancelAsync(runId, "cancelled from the command line", DateTimeOffset.UtcNow, ct);
            await using var db = dbs.CreateDbContext();
            var run = await db.Runs.SingleOrDefaultAsync(r => r.Id == runId, ct)
                ?? throw new ArgumentException($"no run {runId} in the store");
            Console.WriteLine($"run {runId}: {run.State.ToString().ToLowerInvariant()}");
        });
        return command;
    }

    static Command Resume()
    {
        var id = RunId();
        var command = WithStore("resume", "resume a failed or cancelled run from its first unfinished stage (embedded: runs it here)", id,
            RunCommand.VerboseOption);
        command.SetAction(async (parse, ct) =>
        {
            var store = RunStore.From(parse);
            var runId = parse.GetValue(id);
            if (!store.Embedded)
            {
                await SendAsync(store, new ResumeRun(runId), ct);
                Console.WriteLine($"resume sent for run {runId}");
                return 0;
            }
            using var host = store.StartHost(allRoles: true, parse.GetValue(RunCommand.VerboseOption));
            // Resumed here before following, so the follower never sees the old state; a run still marked running
            // (its process died) is picked up by the reconciler once its lease or dispatch times out.
            if (await host.Services.GetRequiredService<RunControl>().ResumeAsync(runId, ct) is null)
                throw new ArgumentException($"no run {runId} in the store");
            return await RunCommand.FollowToEndAsync(host, store, runId, ct);
        });
        return command;
    }

    /// <summary>Sends a run command to a deployment's orchestrator queue.</summary>
    static async Task SendAsync(RunStore store, object message, CancellationToken ct)
    {
        using var host = store.StartHost(allRoles: false, verbose: false);
        var orchestrator = host.Services.GetRequiredService<RoleQueues>().Address(Roles.Orchestrator);
        await (await host.Services.GetRequiredService<IBus>().GetSendEndpoint(orchestrator)).Send(message, ct);
        await host.StopAsync(CancellationToken.None);
    }

    static string Seconds(TimeSpan? duration) => duration is { } d ? $"{d.TotalSeconds:F1}s" : "";

    sealed class StoreFactory(RunStore store) : IDbContextFactory<HyperSd.Data.MetadataDbContext>
    {
        public HyperSd.Data.MetadataDbContext CreateDbContext() => HyperSd.Data.MetadataStore.CreateContext(store.Options([]).Store);
    }
}
