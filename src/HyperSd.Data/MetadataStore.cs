using System.Reflection;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Data;

public static class MetadataStoreExtensions
{
    /// <summary>
    /// Configures the provider named by <see cref="MetadataStoreOptions.Provider"/> with its migrations assembly.
    /// The host must reference that migrations project (migrations/HyperSd.Migrations.*) to migrate.
    /// </summary>
    public static DbContextOptionsBuilder UseMetadataStore(this DbContextOptionsBuilder builder, MetadataStoreOptions options)
    {
        if (string.IsNullOrWhiteSpace(options.ConnectionString))
            throw new ArgumentException("MetadataStoreOptions.ConnectionString is empty.", nameof(options));
        return options.Provider switch
        {
            MetadataStoreOptions.Sqlite => builder.UseSqlite(options.ConnectionString,
                b => b.MigrationsAssembly(MetadataStore.SqliteMigrationsAssembly)),
            MetadataStoreOptions.Postgres => builder.UseNpgsql(options.ConnectionString,
                b => b.MigrationsAssembly(MetadataStore.PostgresMigrationsAssembly)),
            _ => throw new ArgumentException(
                $"MetadataStoreOptions.Provider is '{options.Provider}'; expected " +
                $"'{MetadataStoreOptions.Sqlite}' or '{MetadataStoreOptions.Postgres}'.", nameof(options)),
        };
    }
}

public static class MetadataStore
{
    public const string SqliteMigrationsAssembly = "HyperSd.Migrations.Sqlite";
    public const string PostgresMigrationsAssembly = "HyperSd.Migrations.Postgres";

    public static MetadataDbContext CreateContext(MetadataStoreOptions options)
    {
        var builder = new DbContextOptionsBuilder<MetadataDbContext>();
        builder.UseMetadataStore(options);
        return new MetadataDbContext(builder.Options);
    }

    /// <summary>Creates the database if needed and applies all pending migrations.</summary>
    public static async Task MigrateAsync(MetadataStoreOptions options, CancellationToken cancellationToken = default)
    {
        await using var db = CreateContext(options);
        var assembly = options.Provider == MetadataStoreOptions.Postgres
            ? PostgresMigrationsAssembly : SqliteMigrationsAssembly;
        try
        {
            Assembly.Load(assembly);
        }
        catch (FileNotFoundException e)
        {
            // EF would otherwise report "no migrations found" and create nothing.
            throw new InvalidOperationException(
                $"Cannot migrate the {options.Provider} metadata store: assembly {assembly} is not loadable; " +
                $"reference migrations/{assembly}/{assembly}.csproj from the host.", e);
        }
        await db.Database.MigrateAsync(cancellationToken);
    }
}
