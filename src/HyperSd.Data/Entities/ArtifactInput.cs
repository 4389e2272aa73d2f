namespace HyperSd.Data.Entities;

/// <summary>Lineage edge: <see cref="ArtifactId"/> was made from <see cref="InputArtifactId"/>.</summary>
public class ArtifactInput
{
    public Guid ArtifactId { get; set; }
    public Guid InputArtifactId { get; set; }
}
