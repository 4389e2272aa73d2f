namespace HyperSd.Data.Entities;

/// <summary>An API key kept by the store (the one the API host makes on its first start when none is configured): only
/// the SHA-256 of the key, never the key itself.</summary>
public class ApiKey
{
    public Guid Id { get; set; }
    public required string Name { get; set; }
    /// <summary>admin, operator or viewer.</summary>
    public required string Role { get; set; }
    /// <summary>Lower-case hex SHA-256 of the key's UTF-8 bytes; unique.</summary>
    public required string Sha256 { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
}
