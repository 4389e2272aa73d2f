using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.Orchestrator;
using MassTransit;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Runs;

/// <summary>Cancels and resumes runs in a process that holds the store and a bus (the API host, the embedded CLI): the
/// transition is committed here and its stage commands sent, as the orchestrator does for a CancelRun or ResumeRun.</summary>
public sealed class RunControl(IDbContextFactory<MetadataDbContext> dbs, RunLifecycle lifecycle, IBus send, RoleQueues queues)
{
    /// <summary>Cancels a pending or running run (no change otherwise); returns its state after, or null if there is no such run.</summary>
    public Task<RunState?> CancelAsync(Guid runId, string reason, CancellationToken ct = default) =>
        ChangeAsync(runId, now => lifecycle.CancelAsync(runId, reason, now, ct), ct);

    /// <summary>Resumes a failed or cancelled run from its first unfinished stage (no change otherwise); returns its state
    /// after, or null if there is no such run.</summary>
    public Task<RunState?> ResumeAsync(Guid runId, CancellationToken ct = default) =>
        ChangeAsync(runId, now => lifecycle.ResumeAsync(runId, now, ct), ct);

    /// <summary>Waits before each retry, as the orchestrator's queue does.</summary>
    static readonly TimeSpan[] RetryDelays = [.. new[] { 50, 200, 500, 1000, 2000 }.Select(ms => TimeSpan.FromMilliseconds(ms))];

    async Task<RunState?> ChangeAsync(Guid runId, Func<DateTimeOffset, Task<IReadOnlyList<StageDispatch>>> transition, CancellationToken ct)
    {
        if (await StateAsync(runId, ct) is null) return null;
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                await send.SendAsync(queues, await transition(await lifecycle.NowAsync(ct)), ct); // the store's clock
                return await StateAsync(runId, ct);
            }
            catch (DbUpdateConcurrencyException) when (attempt < RetryDelays.Length)
            {
                // the orchestrator changed one of the run's stages meanwhile: run the transition again on fresh state
                await Task.Delay(RetryDelays[attempt], ct);
            }
        }
    }

    async Task<RunState?> StateAsync(Guid runId, CancellationToken ct)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        return await db.Runs.AsNoTracking().Where(r => r.Id == runId).Select(r => (RunState?)r.State).SingleOrDefaultAsync(ct);
    }
}
