using HyperSd.Data;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Hosting;

/// <summary>Creates and migrates the metadata store before the bus starts (registered first, so it starts first).</summary>
public sealed class StoreMigration(WorkerOptions options, IDbContextFactory<MetadataDbContext> dbs, ILogger<StoreMigration> logger)
    : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (options.Store.Provider == MetadataStoreOptions.Sqlite && SqliteFile(options.Store.ConnectionString) is { } file)
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(file))!);
        await MetadataStore.MigrateAsync(options.Store, cancellationToken);
        if (options.Store.Provider == MetadataStoreOptions.Sqlite)
        {
            // Several writers in one process (consumers, heartbeats, the reconciler): WAL lets readers run beside them.
            await using var db = await dbs.CreateDbContextAsync(cancellationToken);
            await db.Database.ExecuteSqlRawAsync("PRAGMA journal_mode=WAL;", cancellationToken);
        }
        logger.LogInformation("metadata store ready ({Provider})", options.Store.Provider);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    static string? SqliteFile(string connectionString) =>
        new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(connectionString).DataSource is { Length: > 0 } source
        && source != ":memory:"
            ? source : null;
}
