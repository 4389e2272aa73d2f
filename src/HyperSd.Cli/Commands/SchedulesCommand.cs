using System.CommandLine;
using System.Globalization;
using HyperSd.Data.Entities;
using HyperSd.Services.Schedules;
using Microsoft.Extensions.DependencyInjection;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd schedules add|list|pause|resume|remove</c>: nightly runs, through <see cref="ScheduleService"/> on the
/// local store or a deployment's API (<c>--api</c>). A running host picks up changes made in its store within
/// <c>RecurringSchedules.SyncInterval</c>.</summary>
public static class SchedulesCommand
{
    public static Command Create()
    {
        var command = new Command("schedules", "recurring runs of a recipe on a cron expression in a time zone (local store or --api)");
        command.Subcommands.Add(Add());
        command.Subcommands.Add(List());
        command.Subcommands.Add(SetEnabled("pause", "pause a schedule (no firings until resumed)", false));
        command.Subcommands.Add(SetEnabled("resume", "resume a paused schedule", true));
        command.Subcommands.Add(Remove());
        return command;
    }

    static Command WithSource(string name, string description, params Symbol[] symbols) =>
        RunStore.Subcommand(name, description, rabbitMq: false, api: true, symbols);

    static Argument<Guid> Id() => new("schedule-id") { Description = "the schedule's id" };

    static Command Add()
    {
        var name = new Argument<string>("name") { Description = "the schedule's name (unique)" };
        var recipe = new Option<FileInfo?>("--recipe") { Description = "the recipe YAML (stored with the schedule)" };
        var recipeId = new Option<Guid?>("--recipe-id") { Description = "a stored recipe's id instead" };
        var cron = new Option<string>("--cron") { Description = "five-field cron: minute hour day month weekday, e.g. \"0 2 * * *\"",
            Required = true };
        var zone = new Option<string>("--time-zone") { Description = "IANA time zone of the cron times", DefaultValueFactory = _ => "UTC" };
        var overlap = new Option<ScheduleOverlap>("--overlap")
        {
            Description = "skip: no firing while the schedule's previous run is active; queue: start anyway",
            DefaultValueFactory = _ => ScheduleOverlap.Skip,
        };
        var paused = new Option<bool>("--paused") { Description = "create it paused" };
        var command = WithSource("add", "create a schedule", name, recipe, recipeId, cron, zone, overlap, paused);
        command.SetAction(async (parse, ct) =>
        {
            var text = parse.GetValue(recipe) is { } file
                ? File.Exists(file.FullName) ? await File.ReadAllTextAsync(file.FullName, ct)
                : throw new ArgumentException($"--recipe: no file {file.FullName}")
                : null;
            var request = new ScheduleRequest(parse.GetValue(name)!, parse.GetValue(recipeId), text, parse.GetValue(cron)!,
                parse.GetValue(zone)!, parse.GetValue(overlap), !parse.GetValue(paused));
            var saved = await WithServiceAsync(parse, api => api.AddScheduleAsync(request, ct), s => s.SaveAsync(null, request, ct));
            Print([saved]);
        });
        return command;
    }

    static Command List()
    {
        var command = WithSource("list", "the schedules with their next firing");
        command.SetAction(async (parse, ct) =>
            Print(await WithServiceAsync(parse, api => api.ListSchedulesAsync(ct), s => s.ListAsync(ct))));
        return command;
    }

    static Command SetEnabled(string verb, string description, bool enabled)
    {
        var id = Id();
        var command = WithSource(verb, description, id);
        command.SetAction(async (parse, ct) => Print([await WithServiceAsync(parse,
            api => api.SetScheduleEnabledAsync(parse.GetValue(id), enabled, ct),
            s => s.SetEnabledAsync(parse.GetValue(id), enabled, ct))]));
        return command;
    }

    static Command Remove()
    {
        var id = Id();
        var command = WithSource("remove", "delete a schedule (the runs it started stay)", id);
        command.SetAction(async (parse, ct) =>
        {
            var scheduleId = parse.GetValue(id);
            await WithServiceAsync(parse, async api =>
            {
                await api.RemoveScheduleAsync(scheduleId, ct);
                return true;
            }, async s =>
            {
                await s.DeleteAsync(scheduleId, ct);
                return true;
            });
            Console.WriteLine($"schedule {scheduleId} removed");
        });
        return command;
    }

    /// <summary>Through the deployment's API when --api is given, else the local store's <see cref="ScheduleService"/>.</summary>
    static async Task<T> WithServiceAsync<T>(ParseResult parse, Func<ApiClient, Task<T>> remote, Func<ScheduleService, Task<T>> local)
    {
        if (ApiClient.From(parse) is { } api)
            using (api)
                return await remote(api);
        var store = RunStore.From(parse) with { RabbitMq = null };
        await using (await store.OpenAsync()) { } // migrated
        using var host = store.StartHost(allRoles: false, verbose: false);
        try
        {
            return await local(host.Services.GetRequiredService<ScheduleService>());
        }
        finally
        {
            await host.StopAsync(CancellationToken.None);
        }
    }

    static void Print(IReadOnlyList<ScheduleView> schedules) =>
        EvalsCommand.WriteTable(Console.Out, ["id", "name", "cron", "time zone", "overlap", "state", "next firing (local)"],
            schedules.Select(s => new[]
            {
                s.Id.ToString(), s.Name, s.Cron, s.TimeZone, s.Overlap.ToString().ToLowerInvariant(), s.Enabled ? "active" : "paused",
                s.NextFiring?.ToLocalTime().ToString("yyyy-MM-dd HH:mm zzz", CultureInfo.InvariantCulture) ?? "",
            }));
}
