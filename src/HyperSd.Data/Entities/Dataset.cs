namespace HyperSd.Data.Entities;

/// <summary>A prepared dataset: where it came from, how many samples it has and how many were rejected.</summary>
public class Dataset
{
    public Guid Id { get; set; }
    public Guid RunId { get; set; }
    public Guid StageId { get; set; }
    public required string Source { get; set; }
    public int Count { get; set; }
    public int BadCount { get; set; }
    public Guid ArtifactId { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
}
