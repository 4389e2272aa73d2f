using HyperSd.Data;
using Microsoft.EntityFrameworkCore.Design;

namespace HyperSd.Migrations.Postgres;

/// <summary>For dotnet-ef: generating migrations needs only the provider, not a live server.</summary>
public sealed class DesignTimeFactory : IDesignTimeDbContextFactory<MetadataDbContext>
{
    public MetadataDbContext CreateDbContext(string[] args) => MetadataStore.CreateContext(new MetadataStoreOptions
    {
        Provider = MetadataStoreOptions.Postgres,
        ConnectionString = "Host=127.0.0.1;Port=5432;Database=hypersd;Username=postgres",
    });
}
