using System.Diagnostics;
using HyperSd.Services.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Execution;

/// <summary>
/// Renews a running attempt's lease every heartbeat and stops its work when the lease is gone: taken from it (cancelled,
/// re-dispatched), or about to expire because the store could not be reached. The expiry is judged on this process's
/// monotonic clock from the start of the last renewal that succeeded — the server's expiry is at least that late — so
/// a worker cut off from the store stops before the orchestrator can see its lease expired and dispatch the next attempt.
/// </summary>
public sealed class LeaseKeeper(StageLeases leases, WorkerOptions options, ILogger logger)
{
    public async Task KeepAsync(StageContext context, CancellationTokenSource work, CancellationToken stop)
    {
        // stop a beat before the expiry: the last try may itself take up to a beat
        var giveUpAfter = options.LeaseTimeout - options.HeartbeatInterval;
        long renewed = Stopwatch.GetTimestamp();
        long reported = context.Progress.Reports;
        using var timer = new PeriodicTimer(options.HeartbeatInterval);
        try
        {
            while (await timer.WaitForNextTickAsync(stop))
            {
                long attempt = Stopwatch.GetTimestamp();
                try
                {
                    using var bounded = CancellationTokenSource.CreateLinkedTokenSource(stop);
                    bounded.CancelAfter(options.HeartbeatInterval);
                    var progress = context.Progress;
                    if (await leases.HeartbeatAsync(context.Lease, progress, bounded.Token, progress.Reports != reported))
                    {
                        renewed = attempt;
                        reported = progress.Reports;
                        continue;
                    }
                    logger.LogWarning("the stage is no longer this worker's (cancelled or re-dispatched); stopping the work");
                    await work.CancelAsync();
                    return;
                }
                catch (Exception e) when (!stop.IsCancellationRequested)
                {
                    logger.LogWarning("heartbeat failed: {Error}", e.Message);
                }
                if (Stopwatch.GetElapsedTime(renewed) < giveUpAfter) continue;
                logger.LogError("no heartbeat stored for {Elapsed}: the lease expires; stopping the work",
                    Stopwatch.GetElapsedTime(renewed));
                await work.CancelAsync();
                return;
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    }
}
