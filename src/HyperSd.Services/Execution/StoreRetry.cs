using System.Data.Common;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Execution;

/// <summary>Retries a store operation through a brief outage (a restart, a fail-over, a dropped connection), so that
/// finished work is not thrown away for one failed write; a concurrency conflict or a lost lease is not retried.</summary>
public static class StoreRetry
{
    /// <summary>About 25 s of retries in all: a database restart fits.</summary>
    static readonly TimeSpan[] Delays = [.. new[] { 0.5, 1, 2, 4, 8, 10 }.Select(TimeSpan.FromSeconds)];

    public static async Task<T> RunAsync<T>(Func<Task<T>> operation, ILogger logger, CancellationToken ct)
    {
        for (int retry = 0; ; retry++)
        {
            try
            {
                return await operation();
            }
            catch (Exception e) when (retry < Delays.Length && IsTransient(e) && !ct.IsCancellationRequested)
            {
                logger.LogWarning("store unreachable ({Error}); retrying in {Delay}", e.Message, Delays[retry]);
                await Task.Delay(Delays[retry], ct);
            }
        }
    }

    public static Task RunAsync(Func<Task> operation, ILogger logger, CancellationToken ct) =>
        RunAsync(async () => { await operation(); return true; }, logger, ct);

    /// <summary>A failure of the connection to the store, not of the data.</summary>
    public static bool IsTransient(Exception e) => e switch
    {
        DbUpdateConcurrencyException or LeaseLostException => false,
        TimeoutException or DbException { IsTransient: true } => true,
        _ => e.InnerException is { } inner && IsTransient(inner),
    };
}
