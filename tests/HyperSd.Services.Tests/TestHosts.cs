using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.Stages;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Tests;

/// <summary>Worker hosts of a test and waiting on their runs.</summary>
public static class TestHosts
{
    public static IHost Start(WorkerOptions options, StageCatalogue catalogue)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        // HYPERSD_TEST_LOG=1: the hosts' logs on the console (a flaky fault test's story)
        if (Environment.GetEnvironmentVariable("HYPERSD_TEST_LOG") is not null)
            builder.Logging.AddSimpleConsole(o => o.TimestampFormat = "HH:mm:ss.fff ");
        builder.Services.AddHyperSdWorkers(options, catalogue);
        var host = builder.Build();
        host.Start();
        return host;
    }

    /// <summary>The run once <paramref name="condition"/> holds; throws after <paramref name="timeout"/> (default a minute), naming
    /// <paramref name="what"/>.</summary>
    public static async Task<Run> WaitForAsync(this TestStore store, Guid runId, Func<Run, bool> condition, string what,
        TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(60));
        while (true)
        {
            var run = await store.RunAsync(runId);
            if (condition(run)) return run;
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException(
                    $"waiting for {what}: run {run.State} ({run.Error}), stage {run.Stages[0].State}#{run.Stages[0].Attempt}");
            await Task.Delay(200);
        }
    }
}
