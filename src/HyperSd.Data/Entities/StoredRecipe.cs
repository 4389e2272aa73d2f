namespace HyperSd.Data.Entities;

/// <summary>A recipe as submitted: the YAML text and its hash, so a run can always show what it ran.</summary>
public class StoredRecipe
{
    public Guid Id { get; set; }
    public required string Name { get; set; }
    public required string Yaml { get; set; }
    public required string Sha256 { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
}
