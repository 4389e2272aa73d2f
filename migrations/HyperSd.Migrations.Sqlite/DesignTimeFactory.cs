using HyperSd.Data;
using Microsoft.EntityFrameworkCore.Design;

namespace HyperSd.Migrations.Sqlite;

/// <summary>For dotnet-ef: generating migrations needs only the provider, not a database file.</summary>
public sealed class DesignTimeFactory : IDesignTimeDbContextFactory<MetadataDbContext>
{
    public MetadataDbContext CreateDbContext(string[] args) => MetadataStore.CreateContext(new MetadataStoreOptions
    {
        Provider = MetadataStoreOptions.Sqlite,
        ConnectionString = "Data Source=hypersd.db",
    });
}
