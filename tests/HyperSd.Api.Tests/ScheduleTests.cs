using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Hangfire;
using Hangfire.Client;
using Hangfire.Common;
using Hangfire.Server;
using Hangfire.Storage;
using HyperSd.Cli.Commands;
using HyperSd.Data.Entities;
using HyperSd.Services.Runs;
using HyperSd.Services.Schedules;
using HyperSd.Testing;
using Microsoft.AspNetCore.TestHost;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

namespace HyperSd.Api.Tests;

/// <summary>Schedules: validated, kept in step with Hangfire's recurring jobs, firing through the application layer with
/// the overlap policy; the dashboard behind the keys.</summary>
public sealed class ScheduleTests : IAsyncLifetime
{
    ApiTestHost host = null!;
    HttpClient client = null!;

    public async Task InitializeAsync()
    {
        host = await ApiTestHost.StartAsync();
        client = host.Client(ApiTestHost.OperatorKey);
    }

    public async Task DisposeAsync() => await host.DisposeAsync();

    List<RecurringJobDto> RecurringJobs()
    {
        using var connection = host.App.Services.GetRequiredService<JobStorage>().GetConnection();
        return [.. connection.GetRecurringJobs().Where(j => j.Id != StoreGcJob.JobId)];
    }

    [Fact]
    public async Task The_stores_garbage_collection_is_a_recurring_job_at_the_configured_utc_time()
    {
        using (var connection = host.App.Services.GetRequiredService<JobStorage>().GetConnection())
        {
            var gc = connection.GetRecurringJobs().Single(j => j.Id == StoreGcJob.JobId);
            Assert.Equal((new ApiOptions().GcCron, "UTC"), (gc.Cron, gc.TimeZoneId));
        }
        var job = ActivatorUtilities.CreateInstance<StoreGcJob>(host.App.Services);
        Assert.StartsWith("removed 0 item(s)", await job.RunAsync());
        Assert.Contains("Api:GcCron", Assert.Throws<ArgumentException>(() => new ApiOptions { GcCron = "3am" }.Validate()).Message);
        var off = new ApiOptions { GcCron = "" }.Validate();
        Assert.Equal("", off.GcCron);
    }

    async Task<ScheduleView> CreateAsync(string name, string cron = "0 2 * * *", string zone = "Europe/Berlin",
        ScheduleOverlap overlap = ScheduleOverlap.Skip)
    {
        var response = await client.PostAsJsonAsync("/api/schedules",
            new ScheduleRequest(name, null, TinyToy.Recipe(), cron, zone, overlap), ApiTestHost.Json);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, text);
        return JsonSerializer.Deserialize<ScheduleView>(text, ApiTestHost.Json)!;
    }

    static async Task<T> Ok<T>(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{response.StatusCode}: {text}");
        return JsonSerializer.Deserialize<T>(text, ApiTestHost.Json)!;
    }

    [Fact]
    public async Task Create_pause_resume_replace_and_delete_keep_the_recurring_job_in_step()
    {
        var created = await CreateAsync("nightly");
        Assert.True(created.Enabled);
        Assert.NotNull(created.NextFiring);
        var job = Assert.Single(RecurringJobs());
        Assert.Equal((RecurringSchedules.JobId(created.Id), "0 2 * * *", "Europe/Berlin"), (job.Id, job.Cron, job.TimeZoneId));

        var paused = await Ok<ScheduleView>(await client.PostAsync($"/api/schedules/{created.Id}/pause", null));
        Assert.Equal((false, (DateTimeOffset?)null), (paused.Enabled, paused.NextFiring));
        Assert.Empty(RecurringJobs());
        await Ok<ScheduleView>(await client.PostAsync($"/api/schedules/{created.Id}/resume", null));
        Assert.Single(RecurringJobs());

        var replaced = await Ok<ScheduleView>(await client.PutAsJsonAsync($"/api/schedules/{created.Id}",
            new ScheduleRequest("nightly", created.RecipeId, null, "30 3 * * 1", "UTC"), ApiTestHost.Json));
        Assert.Equal(created.RecipeId, replaced.RecipeId);
        Assert.Equal(("30 3 * * 1", "UTC"), (Assert.Single(RecurringJobs()).Cron, Assert.Single(RecurringJobs()).TimeZoneId));
        Assert.Equal([created.Id], (await Ok<List<ScheduleView>>(await host.Client(ApiTestHost.ViewerKey).GetAsync("/api/schedules")))
            .Select(s => s.Id));

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/api/schedules/{created.Id}")).StatusCode);
        Assert.Empty(RecurringJobs());
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync($"/api/schedules/{created.Id}")).StatusCode);
    }

    [Theory]
    [InlineData("61 * * * *", "UTC", "cron")]
    [InlineData("every night", "UTC", "cron")]
    [InlineData("0 2 * * *", "Mars/Olympus_Mons", "timeZone")]
    [InlineData("", "UTC", "cron")]
    public async Task A_bad_cron_or_time_zone_is_refused_naming_it_and_nothing_is_stored(string cron, string zone, string field)
    {
        var response = await client.PostAsJsonAsync("/api/schedules",
            new ScheduleRequest("bad", null, TinyToy.Recipe(), cron, zone), ApiTestHost.Json);
        await AssertRefused(response, HttpStatusCode.BadRequest, field);
    }

    [Fact]
    public async Task An_unknown_recipe_id_a_bad_recipe_or_both_kinds_of_recipe_are_refused()
    {
        await AssertRefused(await client.PostAsJsonAsync("/api/schedules",
            new ScheduleRequest("x", Guid.NewGuid(), null, "0 2 * * *", "UTC"), ApiTestHost.Json), HttpStatusCode.NotFound, "recipeId");
        await AssertRefused(await client.PostAsJsonAsync("/api/schedules",
            new ScheduleRequest("x", Guid.NewGuid(), TinyToy.Recipe(), "0 2 * * *", "UTC"), ApiTestHost.Json), HttpStatusCode.BadRequest,
            "recipe");
        await AssertRefused(await client.PostAsJsonAsync("/api/schedules",
            new ScheduleRequest("x", null, TinyToy.Recipe().Replace("count: 24", "count: 0"), "0 2 * * *", "UTC"), ApiTestHost.Json),
            HttpStatusCode.BadRequest, "trajectories.count");
        await AssertRefused(await host.Client(ApiTestHost.ViewerKey).PostAsJsonAsync("/api/schedules",
            new ScheduleRequest("x", null, TinyToy.Recipe(), "0 2 * * *", "UTC"), ApiTestHost.Json), HttpStatusCode.Forbidden, null);
    }

    async Task AssertRefused(HttpResponseMessage response, HttpStatusCode status, string? field)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"{response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        if (field is not null)
            Assert.True(JsonDocument.Parse(text).RootElement.GetProperty("errors").TryGetProperty(field, out _), text);
        await using var db = host.Db();
        Assert.Equal((0, 0, 0), (await db.Schedules.CountAsync(), await db.Recipes.CountAsync(), await db.Runs.CountAsync()));
        Assert.Empty(RecurringJobs());
    }

    [Fact]
    public async Task A_firing_while_its_run_is_active_starts_no_second_run_and_a_paused_schedule_does_not_fire()
    {
        var schedule = await CreateAsync("overlap");
        var service = host.App.Services.GetRequiredService<ScheduleService>();
        var firedAt = DateTimeOffset.UtcNow;
        var first = await service.FireAsync(schedule.Id, firedAt);
        var second = await service.FireAsync(schedule.Id, firedAt.AddMinutes(1));
        Assert.Equal(FiringOutcome.Started, first.Outcome);
        Assert.Equal((FiringOutcome.SkippedOverlap, (Guid?)null), (second.Outcome, second.RunId));
        await using (var db = host.Db())
        {
            var run = await db.Runs.SingleAsync();
            Assert.Equal((first.RunId, (Guid?)schedule.Id), ((Guid?)run.Id, run.ScheduleId));
            Assert.Equal(firedAt.UtcTicks, run.ScheduledAt!.Value.UtcTicks);
        }

        // the run ends: the next firing, through Hangfire's job, starts another
        await host.App.Services.GetRequiredService<RunControl>().CancelAsync(first.RunId!.Value, "test");
        host.App.Services.GetRequiredService<IRecurringJobManager>().Trigger(RecurringSchedules.JobId(schedule.Id));
        var deadline = DateTime.UtcNow.AddSeconds(30);
        Run? next = null;
        while (next is null && DateTime.UtcNow < deadline)
        {
            await using var db = host.Db();
            next = await db.Runs.SingleOrDefaultAsync(r => r.ScheduleId == schedule.Id && r.Id != first.RunId);
            if (next is null) await Task.Delay(200);
        }
        Assert.NotNull(next);
        await host.App.Services.GetRequiredService<RunControl>().CancelAsync(next.Id, "test");
        var byFiring = await Ok<Page<RunSummary>>(await client.GetAsync($"/api/runs?schedule={schedule.Id}"));
        Assert.Equal([next.Id, first.RunId!.Value], byFiring.Items.Select(r => r.Id));
        Assert.All(byFiring.Items, r => Assert.Equal(schedule.Id, r.ScheduleId));

        await client.PostAsync($"/api/schedules/{schedule.Id}/pause", null);
        Assert.Equal(FiringOutcome.SkippedPaused, (await service.FireAsync(schedule.Id, DateTimeOffset.UtcNow)).Outcome);
    }

    [Fact]
    public async Task The_dashboard_refuses_anonymous_and_wrong_keys_and_is_read_only_for_viewers()
    {
        Assert.Equal(HttpStatusCode.Unauthorized, (await host.Client(null).GetAsync("/hangfire")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await host.Client("wrong-key-0123456789abcdefghij").GetAsync("/hangfire")).StatusCode);
        var page = await host.Client(ApiTestHost.ViewerKey).GetAsync("/hangfire/recurring");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Contains("Hangfire", await page.Content.ReadAsStringAsync());

        var schedule = await CreateAsync("dashboard");
        using var form = new FormUrlEncodedContent([KeyValuePair.Create("jobs[]", RecurringSchedules.JobId(schedule.Id))]);
        var viewerTrigger = await host.Client(ApiTestHost.ViewerKey).PostAsync("/hangfire/recurring/trigger", form);
        Assert.False(viewerTrigger.IsSuccessStatusCode, $"a viewer triggered a job: {viewerTrigger.StatusCode}");
        using var form2 = new FormUrlEncodedContent([KeyValuePair.Create("jobs[]", RecurringSchedules.JobId(schedule.Id))]);
        var operatorTrigger = await client.PostAsync("/hangfire/recurring/trigger", form2);
        Assert.True(operatorTrigger.IsSuccessStatusCode, $"an operator could not trigger a job: {operatorTrigger.StatusCode}");
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            await using var db = host.Db();
            if (await db.Runs.SingleOrDefaultAsync(r => r.ScheduleId == schedule.Id) is { } run)
            {
                await host.App.Services.GetRequiredService<RunControl>().CancelAsync(run.Id, "test");
                return;
            }
            await Task.Delay(200);
        }
        Assert.Fail("the operator's trigger started no run");
    }

    [Fact]
    public async Task The_CLI_client_adds_lists_pauses_and_removes_schedules_through_the_API()
    {
        using var api = ApiClient.Create(new Uri("http://localhost/"), ApiTestHost.OperatorKey, host.App.GetTestServer().CreateHandler());
        var added = await api.AddScheduleAsync(new ScheduleRequest("cli", null, TinyToy.Recipe(), "15 1 * * *", "America/New_York"),
            CancellationToken.None);
        Assert.Equal(("cli", true), (added.Name, added.Enabled));
        Assert.Equal(RecurringSchedules.JobId(added.Id), Assert.Single(RecurringJobs()).Id);
        Assert.Equal([added.Id], (await api.ListSchedulesAsync(CancellationToken.None)).Select(s => s.Id));
        Assert.False((await api.SetScheduleEnabledAsync(added.Id, false, CancellationToken.None)).Enabled);
        Assert.Empty(RecurringJobs());
        Assert.True((await api.SetScheduleEnabledAsync(added.Id, true, CancellationToken.None)).Enabled);
        await api.RemoveScheduleAsync(added.Id, CancellationToken.None);
        Assert.Empty(RecurringJobs());
        Assert.Empty(await api.ListSchedulesAsync(CancellationToken.None));
        var bad = await Assert.ThrowsAsync<ArgumentException>(() =>
            api.AddScheduleAsync(new ScheduleRequest("x", null, TinyToy.Recipe(), "0 25 * * *", "UTC"), CancellationToken.None));
        Assert.Contains("cron", bad.Message);
    }

    [Fact]
    public async Task Schedules_changed_in_the_store_by_another_process_reach_the_scheduler_at_its_next_sync()
    {
        // what the CLI does on a local store, or another API replica: the service alone, no Hangfire call
        var service = host.App.Services.GetRequiredService<ScheduleService>();
        var sync = host.App.Services.GetRequiredService<RecurringSchedules>();
        var saved = await service.SaveAsync(null, new ScheduleRequest("elsewhere", null, TinyToy.Recipe(), "0 4 * * *", "UTC"));
        Assert.Empty(RecurringJobs());
        await sync.SyncAsync(CancellationToken.None);
        Assert.Equal(RecurringSchedules.JobId(saved.Id), Assert.Single(RecurringJobs()).Id);
        await service.SetEnabledAsync(saved.Id, false);
        await sync.SyncAsync(CancellationToken.None);
        Assert.Empty(RecurringJobs());
        await service.SetEnabledAsync(saved.Id, true);
        await sync.SyncAsync(CancellationToken.None);
        Assert.Single(RecurringJobs());
        await service.DeleteAsync(saved.Id);
        await sync.SyncAsync(CancellationToken.None);
        Assert.Empty(RecurringJobs());
    }

    /// <summary>
    /// Hangfire's own scheduler on a clock the test sets, for "30 2 * * *" in Europe/Berlin: on 29 March 2026 02:30 does not
    /// exist (clocks go 02:00 → 03:00), so it fires at 03:00 CEST = 01:00 UTC; the next day at 02:30 CEST = 00:30 UTC; on
    /// 25 October 02:30 happens twice and it fires once, at the first (CEST, 00:30 UTC); then 02:30 CET = 01:30 UTC. After
    /// downtime, missed firings make one run at once (the misfire policy), not one per missed time. The run records
    /// the firing's scheduled instant.
    /// </summary>
    [Fact]
    public async Task A_time_zone_schedule_fires_at_the_right_UTC_instants_across_daylight_saving_changes_and_once_after_downtime()
    {
        var schedule = await CreateAsync("dst", "30 2 * * *", "Europe/Berlin");
        var storage = new ClockedStorage(new Hangfire.InMemory.InMemoryStorage());
        var now = Utc(2026, 3, 28, 22, 0);
        var manager = new RecurringJobManager(storage, JobFilterProviders.Providers, new DefaultTimeZoneResolver(), () => now);
        RecurringSchedules.Apply(manager, schedule);
        var scheduler = new RecurringJobScheduler(new BackgroundJobFactory(JobFilterProviders.Providers), TimeSpan.FromMilliseconds(1),
            new DefaultTimeZoneResolver(), () => now);
        var fired = new List<(string JobId, DateTime Time)>();
        void At(DateTime instant)
        {
            now = instant;
            scheduler.Execute(new BackgroundProcessContext("clock", storage, new Dictionary<string, object>(), Guid.NewGuid(),
                CancellationToken.None, CancellationToken.None, CancellationToken.None));
            using var connection = storage.GetConnection();
            var job = connection.GetRecurringJobs().Single();
            if (job.LastJobId is { } id && fired.All(f => f.JobId != id))
                fired.Add((id, DateTimeOffset.FromUnixTimeSeconds(long.Parse(connection.GetJobParameter(id, ScheduleJob.TimeParameter),
                    System.Globalization.CultureInfo.InvariantCulture)).UtcDateTime));
        }
        DateTime[] Times() => [.. fired.Select(f => f.Time)];

        At(Utc(2026, 3, 29, 0, 59, 59));
        Assert.Empty(fired);
        At(Utc(2026, 3, 29, 1, 0));
        Assert.Equal([Utc(2026, 3, 29, 1, 0)], Times());
        At(Utc(2026, 3, 30, 0, 29, 59));
        At(Utc(2026, 3, 30, 0, 30));
        Assert.Equal([Utc(2026, 3, 29, 1, 0), Utc(2026, 3, 30, 0, 30)], Times());

        fired.Clear();
        At(Utc(2026, 10, 24, 23, 0)); // the host was down since 30 March: one firing for all the missed ones, at once
        Assert.Equal([Utc(2026, 10, 24, 23, 0)], Times());
        At(Utc(2026, 10, 25, 0, 30)); // 02:30 CEST
        At(Utc(2026, 10, 25, 1, 30)); // 02:30 again, now CET: no second firing
        At(Utc(2026, 10, 26, 0, 30)); // 01:30 CET: not yet
        At(Utc(2026, 10, 26, 1, 30)); // 02:30 CET
        Assert.Equal([Utc(2026, 10, 24, 23, 0), Utc(2026, 10, 25, 0, 30), Utc(2026, 10, 26, 1, 30)], Times());

        // the job Hangfire made runs the firing through the application layer, which records the scheduled instant
        using (var connection = storage.GetConnection())
        {
            var (jobId, time) = fired[^1];
            var data = connection.GetJobData(jobId);
            var context = new PerformContext(storage, connection, new BackgroundJob(jobId, data.Job, data.CreatedAt), new JobCancellationToken(false));
            var outcome = await new ScheduleJob(host.App.Services.GetRequiredService<ScheduleService>()).FireAsync(schedule.Id, context);
            Assert.Equal(FiringOutcome.Started, outcome);
            await using var db = host.Db();
            var run = await db.Runs.SingleAsync(r => r.ScheduleId == schedule.Id);
            Assert.Equal(new DateTimeOffset(time), run.ScheduledAt);
            await host.App.Services.GetRequiredService<RunControl>().CancelAsync(run.Id, "test");
        }
    }

    static DateTime Utc(int year, int month, int day, int hour, int minute, int second = 0) =>
        new(year, month, day, hour, minute, second, DateTimeKind.Utc);

    /// <summary>A job storage whose scheduler reads the test's clock: it hides the storage's own clock (the feature by which
    /// Hangfire's scheduler would ask the storage for the time).</summary>
    sealed class ClockedStorage(JobStorage inner) : JobStorage
    {
        public override IMonitoringApi GetMonitoringApi() => inner.GetMonitoringApi();
        public override IStorageConnection GetConnection() => inner.GetConnection();
        public override bool HasFeature(string featureId) =>
            featureId != JobStorageFeatures.Connection.GetUtcDateTime && inner.HasFeature(featureId);
    }

    [Fact]
    public async Task With_overlap_queue_firings_during_an_active_run_fold_into_one_that_starts_when_it_ends()
    {
        var schedule = await CreateAsync("queued", overlap: ScheduleOverlap.Queue);
        var service = host.App.Services.GetRequiredService<ScheduleService>();
        var t0 = DateTimeOffset.UtcNow;
        var first = await service.FireAsync(schedule.Id, t0);
        Assert.Equal(FiringOutcome.Started, first.Outcome);
        Assert.Equal(FiringOutcome.Queued, (await service.FireAsync(schedule.Id, t0.AddMinutes(1))).Outcome);
        Assert.Equal(FiringOutcome.Queued, (await service.FireAsync(schedule.Id, t0.AddMinutes(2))).Outcome);
        Assert.Empty(await service.StartQueuedAsync()); // the first run is still active
        await using (var db = host.Db())
            Assert.Equal(1, await db.Runs.CountAsync(r => r.ScheduleId == schedule.Id));

        await host.App.Services.GetRequiredService<RunControl>().CancelAsync(first.RunId!.Value, "test");
        var started = Assert.Single(await service.StartQueuedAsync());
        Assert.Empty(await service.StartQueuedAsync()); // taken once
        await using (var db = host.Db())
        {
            var run = await db.Runs.SingleAsync(r => r.Id == started);
            Assert.Equal((schedule.Id, t0.AddMinutes(1).UtcTicks), (run.ScheduleId!.Value, run.ScheduledAt!.Value.UtcTicks));
            Assert.Null((await db.Schedules.SingleAsync(s => s.Id == schedule.Id)).QueuedFiringAt);
        }
        await host.App.Services.GetRequiredService<RunControl>().CancelAsync(started, "test");
    }
}
