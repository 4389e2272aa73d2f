using Microsoft.Extensions.Logging;

namespace HyperSd.Integration.Tests;

/// <summary>Writes the in-process client's log to a file beside the workers' logs.</summary>
public sealed class FileLoggerProvider(string path) : ILoggerProvider
{
    readonly StreamWriter writer = new(path, append: true) { AutoFlush = true };

    public ILogger CreateLogger(string categoryName) => new FileLogger(this, categoryName);

    void Write(string line)
    {
        lock (writer) writer.WriteLine(line);
    }

    public void Dispose()
    {
        lock (writer) writer.Dispose();
    }

    sealed class FileLogger(FileLoggerProvider provider, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            provider.Write($"{DateTime.Now:HH:mm:ss.fff} {logLevel}: {category} {formatter(state, exception)}{(exception is null ? "" : $"\n{exception}")}");
        }
    }
}
