namespace HyperSd.Data;

/// <summary>Where the metadata store lives: "sqlite" (embedded default) or "postgres" (deployments).</summary>
public sealed class MetadataStoreOptions
{
    public const string Sqlite = "sqlite";
    public const string Postgres = "postgres";

    public string Provider { get; set; } = Sqlite;
    public string ConnectionString { get; set; } = "";
}
