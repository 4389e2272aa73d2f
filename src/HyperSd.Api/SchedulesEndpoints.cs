using Hangfire;
using Hangfire.Dashboard;
using HyperSd.Data.Entities;
using HyperSd.Services.Schedules;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Hosting;

namespace HyperSd.Api;

/// <summary>The Hangfire job of a schedule: a firing through the application layer (<see cref="ScheduleService.FireAsync"/>),
/// never over HTTP. One firing of a schedule at a time, so two cannot both find no active run.</summary>
public sealed class ScheduleJob(ScheduleService schedules)
{
    [DisableConcurrentExecution(timeoutInSeconds: 60)]
    [AutomaticRetry(Attempts = 0)]
    public async Task<FiringOutcome> FireAsync(Guid scheduleId) => (await schedules.FireAsync(scheduleId, DateTimeOffset.UtcNow)).Outcome;
}

/// <summary>Keeps Hangfire's recurring jobs in step with the stored schedules: one per enabled schedule, its id the
/// schedule's; at start every stored schedule is applied again (the in-memory job storage starts empty).</summary>
public sealed class RecurringSchedules(IRecurringJobManager jobs, ScheduleService schedules) : IHostedService
{
    public static string JobId(Guid scheduleId) => $"schedule-{scheduleId}";

    public void Apply(ScheduleView s)
    {
        if (!s.Enabled)
        {
            jobs.RemoveIfExists(JobId(s.Id));
            return;
        }
        var (_, zone) = ScheduleService.Parse(s.Cron, s.TimeZone);
        // missed firings (the host was down): one run at the next start, not one per missed time
        jobs.AddOrUpdate<ScheduleJob>(JobId(s.Id), j => j.FireAsync(s.Id), s.Cron,
            new RecurringJobOptions { TimeZone = zone, MisfireHandling = MisfireHandlingMode.Relaxed });
    }

    public void Remove(Guid scheduleId) => jobs.RemoveIfExists(JobId(scheduleId));

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var s in await schedules.ListAsync(cancellationToken)) Apply(s);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary><c>/api/schedules</c>: create, list, show, replace, pause, resume, delete; each change applied to Hangfire.</summary>
public static class SchedulesEndpoints
{
    public static void Map(IEndpointRouteBuilder api)
    {
        var schedules = api.MapGroup("/schedules").WithTags("schedules");
        schedules.MapGet("/", (ScheduleService s, CancellationToken ct) => s.ListAsync(ct))
            .WithSummary("the schedules, with their next firing");
        schedules.MapGet("/{id}", (Guid id, ScheduleService s, CancellationToken ct) => s.GetAsync(id, ct)).WithSummary("a schedule");
        schedules.MapPost("/", async (ScheduleRequest request, ScheduleService s, RecurringSchedules jobs, CancellationToken ct) =>
        {
            var saved = await s.SaveAsync(null, request, ct);
            jobs.Apply(saved);
            return Results.Created($"/api/schedules/{saved.Id}", saved);
        }).RequireAuthorization(ApiHost.OperatePolicy).Produces<ScheduleView>(StatusCodes.Status201Created)
            .WithSummary("create a schedule: a recipe (recipeId or its text), a cron expression and an IANA time zone");
        schedules.MapPut("/{id}",
                async (Guid id, ScheduleRequest request, ScheduleService s, RecurringSchedules jobs, CancellationToken ct) =>
                    Applied(jobs, await s.SaveAsync(id, request, ct)))
            .RequireAuthorization(ApiHost.OperatePolicy).WithSummary("replace a schedule");
        schedules.MapPost("/{id}/pause", async (Guid id, ScheduleService s, RecurringSchedules jobs, CancellationToken ct) =>
                Applied(jobs, await s.SetEnabledAsync(id, false, ct)))
            .RequireAuthorization(ApiHost.OperatePolicy).WithSummary("pause a schedule (no firings until resumed)");
        schedules.MapPost("/{id}/resume", async (Guid id, ScheduleService s, RecurringSchedules jobs, CancellationToken ct) =>
                Applied(jobs, await s.SetEnabledAsync(id, true, ct)))
            .RequireAuthorization(ApiHost.OperatePolicy).WithSummary("resume a paused schedule");
        schedules.MapDelete("/{id}", async (Guid id, ScheduleService s, RecurringSchedules jobs, CancellationToken ct) =>
        {
            await s.DeleteAsync(id, ct);
            jobs.Remove(id);
            return Results.NoContent();
        }).RequireAuthorization(ApiHost.OperatePolicy).WithSummary("delete a schedule (its runs stay)");
    }

    static ScheduleView Applied(RecurringSchedules jobs, ScheduleView schedule)
    {
        jobs.Apply(schedule);
        return schedule;
    }
}

/// <summary>The dashboard behind the host's keys: the endpoint needs an authenticated caller (its fallback policy); this
/// filter repeats that for Hangfire, whose own default would admit local requests only.</summary>
public sealed class DashboardKeyFilter : IDashboardAuthorizationFilter
{
    public bool Authorize(DashboardContext context) => context.GetHttpContext().User.Identity?.IsAuthenticated == true;

    /// <summary>Viewers see the dashboard read-only; operators and admins may trigger and delete jobs.</summary>
    public static bool ReadOnly(DashboardContext context)
    {
        var user = context.GetHttpContext().User;
        return !(user.IsInRole(ApiRoles.Operator) || user.IsInRole(ApiRoles.Admin));
    }
}
