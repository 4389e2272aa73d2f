using Npgsql;

namespace HyperSd.Testing;

/// <summary>
/// A fresh, uniquely named database on <see cref="PostgresServer"/>, dropped on dispose. Use it as an xunit class
/// fixture to give each test class its own database.
/// </summary>
public sealed class PostgresDatabase : IDisposable
{
    public PostgresDatabase()
    {
        Name = $"hypersd_test_{Guid.NewGuid():N}";
        Execute($"CREATE DATABASE {Name}");
        ConnectionString = new NpgsqlConnectionStringBuilder(PostgresServer.ConnectionString) { Database = Name }.ConnectionString;
    }

    public string Name { get; }

    public string ConnectionString { get; }

    public void Dispose()
    {
        using (var connection = new NpgsqlConnection(ConnectionString))
            NpgsqlConnection.ClearPool(connection);
        Execute($"DROP DATABASE IF EXISTS {Name} WITH (FORCE)");
    }

    private static void Execute(string sql)
    {
        using var connection = new NpgsqlConnection(PostgresServer.ConnectionString);
        connection.Open();
        using var command = new NpgsqlCommand(sql, connection);
        command.ExecuteNonQuery();
    }
}
