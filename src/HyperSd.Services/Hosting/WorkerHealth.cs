using System.Globalization;
using HyperSd.Data;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Hosting;

/// <summary>
/// The worker's health for container probes, with no port to open: every <see cref="Interval"/> it touches
/// <see cref="WorkerOptions.HealthFile"/> (writing the time and status) while the bus is connected and the metadata store
/// answers, and removes it when either fails. A probe checks that the file is younger than a few intervals
/// (<c>hypersd-worker-healthy</c> in the images: Docker's HEALTHCHECK, Kubernetes' liveness and readiness probes).
/// </summary>
public sealed class WorkerHealth(WorkerOptions options, IBusControl bus, IDbContextFactory<MetadataDbContext> dbs,
    IHostApplicationLifetime lifetime, ILogger<WorkerHealth> logger) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var file = options.HealthFile ?? throw new InvalidOperationException("worker health: no health file configured");
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(file))!);
        // from when every hosted service (the store's migration, the bus) has started
        var started = new TaskCompletionSource();
        await using (lifetime.ApplicationStarted.Register(() => started.TrySetResult()))
            await started.Task.WaitAsync(stoppingToken);
        string? lastProblem = null;
        using var timer = new PeriodicTimer(Interval);
        do
        {
            var problem = await ProblemAsync(stoppingToken);
            if (problem is null)
                await File.WriteAllTextAsync(file, $"healthy {DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture)}\n",
                    stoppingToken);
            else
                File.Delete(file);
            if (problem != lastProblem)
            {
                if (problem is null) logger.LogInformation("healthy");
                else logger.LogWarning("unhealthy: {Problem}", problem);
            }
            lastProblem = problem;
        } while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    /// <summary>Null when healthy; else what is wrong.</summary>
    async Task<string?> ProblemAsync(CancellationToken ct)
    {
        var busHealth = bus.CheckHealth();
        if (busHealth.Status != BusHealthStatus.Healthy) return $"bus {busHealth.Status}: {busHealth.Description}";
        try
        {
            await using var db = await dbs.CreateDbContextAsync(ct);
            return await db.Database.CanConnectAsync(ct) ? null : "the metadata store does not answer";
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return $"the metadata store: {e.Message}";
        }
    }
}
