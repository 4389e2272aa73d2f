using HyperSd.Services.Hosting;
using MassTransit;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Orchestrator;

/// <summary>Runs <see cref="RunLifecycle.ReconcileAsync"/> every <see cref="WorkerOptions.ReconcileInterval"/>.</summary>
public sealed class StageReconciler(
    RunLifecycle machine, IBus bus, RoleQueues queues, WorkerOptions options, ILogger<StageReconciler> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.ReconcileInterval);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await bus.SendAsync(queues, await machine.ReconcileAsync(stoppingToken), stoppingToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The store or the bus may be briefly unreachable; the next round tries again.
                logger.LogError(e, "reconciliation failed");
            }
        }
    }
}
