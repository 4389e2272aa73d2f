using Hangfire;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Services.Runs;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;

namespace HyperSd.Api;

/// <summary>The periodic <c>hypersd gc</c>: a Hangfire recurring job (<see cref="ApiOptions.GcCron"/>, UTC) that removes
/// what finished runs no longer need (<see cref="StoreCollector"/>), shown with its outcome on the dashboard.</summary>
public sealed class StoreGcJob(IDbContextFactory<MetadataDbContext> dbs, IArtifactStore store, ILogger<StoreGcJob> logger)
{
    public const string JobId = "store-gc";

    [DisableConcurrentExecution(timeoutInSeconds: 600)]
    [AutomaticRetry(Attempts = 0)]
    public async Task<string> RunAsync()
    {
        var collector = new StoreCollector(dbs, store);
        var items = await collector.FindAsync();
        await collector.RemoveAsync(items);
        var summary = $"removed {items.Count} item(s), {items.Sum(i => i.SizeBytes):N0} bytes";
        logger.LogInformation("store gc: {Summary}", summary);
        return summary;
    }

    /// <summary>The recurring job as <paramref name="cron"/> says (null or empty: none).</summary>
    public static void Apply(IRecurringJobManager jobs, string? cron)
    {
        if (string.IsNullOrWhiteSpace(cron)) jobs.RemoveIfExists(JobId);
        else jobs.AddOrUpdate<StoreGcJob>(JobId, j => j.RunAsync(), cron, new RecurringJobOptions { TimeZone = TimeZoneInfo.Utc });
    }
}
