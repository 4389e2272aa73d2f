using Hangfire.Logging;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using HangfireLevel = Hangfire.Logging.LogLevel;
using LogLevel = Microsoft.Extensions.Logging.LogLevel;

namespace HyperSd.Api;

/// <summary>Hangfire logs through one process-wide provider (a static); this one forwards to the logging of the API host
/// that runs now and drops messages while none does, so a stopped host's disposed logging is never reached (tests start
/// several hosts in one process, one after another).</summary>
public sealed class HangfireLogs : ILogProvider
{
    public static readonly HangfireLogs Instance = new();

    ILoggerFactory? current;

    public Hangfire.Logging.ILog GetLogger(string name) => new Forward(this, name);

    sealed class Forward(HangfireLogs owner, string name) : Hangfire.Logging.ILog
    {
        public bool Log(HangfireLevel level, Func<string>? messageFunc, Exception? exception = null)
        {
            if (Volatile.Read(ref owner.current) is not { } factory) return false;
            var logger = factory.CreateLogger(name);
            var mapped = level switch
            {
                HangfireLevel.Trace => LogLevel.Trace,
                HangfireLevel.Debug => LogLevel.Debug,
                HangfireLevel.Info => LogLevel.Information,
                HangfireLevel.Warn => LogLevel.Warning,
                HangfireLevel.Error => LogLevel.Error,
                _ => LogLevel.Critical,
            };
            // a null message asks whether the level is on
            if (messageFunc is null) return logger.IsEnabled(mapped);
            if (logger.IsEnabled(mapped)) logger.Log(mapped, exception, "{Message}", messageFunc());
            return true;
        }
    }

    /// <summary>Points Hangfire's logs at a host's logging from its start to its stop.</summary>
    public sealed class Attach(ILoggerFactory factory) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken)
        {
            Volatile.Write(ref Instance.current, factory);
            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken cancellationToken)
        {
            Interlocked.CompareExchange(ref Instance.current, null, factory);
            return Task.CompletedTask;
        }
    }
}
