using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Hangfire;
using Hangfire.Storage;
using HyperSd.Data.Entities;
using HyperSd.Services.Runs;
using HyperSd.Services.Schedules;
using HyperSd.Testing;
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
        return connection.GetRecurringJobs();
    }

    async Task<ScheduleView> CreateAsync(string name, string cron = "0 2 * * *", string zone = "Europe/Berlin")
    {
        var response = await client.PostAsJsonAsync("/api/schedules",
            new ScheduleRequest(name, null, TinyToy.Recipe(), cron, zone), ApiTestHost.Json);
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
}
