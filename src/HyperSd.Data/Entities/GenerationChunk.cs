namespace HyperSd.Data.Entities;

/// <summary>One shard of a <see cref="GenerationJob"/>; (job, index) is unique.</summary>
public class GenerationChunk
{
    public Guid Id { get; set; }
    public Guid JobId { get; set; }
    public int Index { get; set; }
    public GenerationState State { get; set; }
    public int Attempt { get; set; }
    public int ImageCount { get; set; }
}
