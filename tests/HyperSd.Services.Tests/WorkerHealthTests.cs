using HyperSd.Services.Hosting;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Tests;

/// <summary>The health file container probes read (hypersd-worker-healthy): there while the worker's bus is connected and
/// its store answers, gone when not.</summary>
public sealed class WorkerHealthTests : IDisposable
{
    readonly TestStore store = new();

    [Fact]
    public async Task A_worker_touches_its_health_file_while_healthy_and_removes_it_when_its_bus_stops()
    {
        var file = Path.Combine(store.Root, "health", "worker.healthy");
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHyperSdWorkers(store.WorkerOptions(o =>
        {
            o.Roles = [];
            o.HealthFile = file;
        }));
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            await WaitAsync(() => File.Exists(file), "the health file");
            Assert.StartsWith("healthy ", await File.ReadAllTextAsync(file));

            await host.Services.GetRequiredService<IBusControl>().StopAsync();
            await WaitAsync(() => !File.Exists(file), "the health file to go once the bus stopped", WorkerHealth.Interval * 2);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    static async Task WaitAsync(Func<bool> condition, string what, TimeSpan? limit = null)
    {
        var deadline = DateTime.UtcNow + (limit ?? TimeSpan.FromSeconds(30));
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"waited for {what}");
            await Task.Delay(100);
        }
    }

    public void Dispose() => store.Dispose();
}
