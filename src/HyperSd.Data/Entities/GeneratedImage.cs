namespace HyperSd.Data.Entities;

public class GeneratedImage
{
    public Guid Id { get; set; }
    public Guid ChunkId { get; set; }
    public required string Prompt { get; set; }
    public long Seed { get; set; }
    public Guid ArtifactId { get; set; }
}
