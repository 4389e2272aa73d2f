namespace HyperSd.Data.Entities;

/// <summary>A file or folder in the artifact store, with its content hash and the stage that made it.</summary>
public class Artifact
{
    public Guid Id { get; set; }
    /// <summary>dataset, trajectories, checkpoint, lora, pipeline, grid, report, ...</summary>
    public required string Kind { get; set; }
    /// <summary>Relative to the artifact store's root, '/'-separated; unique.</summary>
    public required string Path { get; set; }
    public required string Sha256 { get; set; }
    public long SizeBytes { get; set; }
    public Guid? RunId { get; set; }
    public Guid? StageId { get; set; }
    public DateTimeOffset CreatedAt { get; set; }

    /// <summary>Lineage: the artifacts this one was made from.</summary>
    public List<ArtifactInput> Inputs { get; set; } = [];
}
