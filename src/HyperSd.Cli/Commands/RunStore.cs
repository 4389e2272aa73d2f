using System.CommandLine;
using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Services.Hosting;
using HyperSd.Services.Stages;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Cli.Commands;

/// <summary>Where runs live: the embedded store (a SQLite file and an artifact folder under --store-dir), or a
/// deployment's PostgreSQL (--postgres) and RabbitMQ (--rabbitmq).</summary>
public sealed record RunStore(string StoreDir, string? Postgres, string? RabbitMq)
{
    public static readonly Option<DirectoryInfo> StoreDirOption = new("--store-dir")
    {
        Description = "embedded store: the SQLite file and, beside it, the artifact folder",
        DefaultValueFactory = _ => new DirectoryInfo("artifacts/store"),
    };
    /// <summary>The environment variables hypersd-worker reads these from (HyperSd:Store:*, HyperSd:RabbitMq): inside a
    /// deployment's container the CLI finds its deployment with no secret on the command line.</summary>
    public const string PostgresVariable = "HyperSd__Store__ConnectionString", ProviderVariable = "HyperSd__Store__Provider",
        RabbitMqVariable = "HyperSd__RabbitMq";
    public static readonly Option<string?> PostgresOption = new("--postgres")
    {
        Description = $"a deployment's PostgreSQL connection string (default: ${PostgresVariable} where ${ProviderVariable} is postgres)",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable(ProviderVariable) == MetadataStoreOptions.Postgres
                                   && Environment.GetEnvironmentVariable(PostgresVariable) is { Length: > 0 } v ? v : null,
    };
    public static readonly Option<string?> RabbitMqOption = new("--rabbitmq")
    {
        Description = $"a deployment's RabbitMQ (amqp://user:pass@host:port/vhost[?queue-type=quorum]; default: ${RabbitMqVariable})",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable(RabbitMqVariable) is { Length: > 0 } v ? v : null,
    };

    public static RunStore From(ParseResult parse) => new(parse.GetValue(StoreDirOption)!.FullName, parse.GetValue(PostgresOption),
        parse.GetValue(RabbitMqOption));

    public bool Embedded => RabbitMq is null;

    public WorkerOptions Options(IEnumerable<string> roles) => new WorkerOptions
    {
        Roles = [.. roles],
        Store = Postgres is null
            ? new MetadataStoreOptions
            {
                Provider = MetadataStoreOptions.Sqlite, ConnectionString = $"Data Source={Path.Combine(StoreDir, "metadata.db")}"
            }
            : new MetadataStoreOptions { Provider = MetadataStoreOptions.Postgres, ConnectionString = Postgres },
        ArtifactRoot = Path.Combine(StoreDir, "artifacts"),
        Transport = RabbitMq is null ? WorkerOptions.InMemory : WorkerOptions.RabbitMqTransport,
        RabbitMq = RabbitMq is null ? new RabbitMqOptions() : RabbitMqOptions.FromUri(RabbitMq),
        HeartbeatInterval = TimeSpan.FromSeconds(2),
        ReconcileInterval = TimeSpan.FromSeconds(2),
    }.Validate();

    /// <summary>A started host: every role in this process (embedded), or none (a client of a deployment).</summary>
    public IHost StartHost(bool allRoles, bool verbose, Action<WorkerOptions>? configure = null)
    {
        var builder = Host.CreateApplicationBuilder();
        Configure(builder, allRoles, verbose, configure);
        var host = builder.Build();
        host.Start();
        return host;
    }

    /// <summary>Logging to stderr (the command's output owns stdout), signals left to the command line, and the workers:
    /// every role here (embedded), or none. The API host (<c>hypersd serve</c>) adds itself on top.</summary>
    public WorkerOptions Configure(IHostApplicationBuilder builder, bool allRoles, bool verbose, Action<WorkerOptions>? configure = null)
    {
        var options = Options(allRoles ? StageCatalogue.Default().Roles : []);
        configure?.Invoke(options);
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o =>
        {
            o.IncludeScopes = true;
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss ";
        });
        // Logs go to stderr; the progress display owns stdout.
        builder.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(
            o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        builder.Logging.SetMinimumLevel(verbose ? LogLevel.Information : LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.EntityFrameworkCore", LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);
        // Ctrl+C belongs to the command (it cancels the run), not to the host's console lifetime.
        builder.Services.AddSingleton<IHostLifetime, CommandLifetime>();
        builder.Services.AddHyperSdWorkers(options);
        return options;
    }

    /// <summary>A context on the store, migrated first (an embedded store may not exist yet).</summary>
    public async Task<MetadataDbContext> OpenAsync()
    {
        var options = Options([]);
        if (Postgres is null) Directory.CreateDirectory(StoreDir);
        await MetadataStore.MigrateAsync(options.Store);
        return MetadataStore.CreateContext(options.Store);
    }
}

/// <summary>A host lifetime that leaves process signals to the command line.</summary>
sealed class CommandLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
