namespace HyperSd.Data.Entities;

public enum GenerationState { Pending, Running, Succeeded, Failed, Cancelled }

/// <summary>A bulk prompt-to-image job, sharded into <see cref="GenerationChunk"/>s.</summary>
public class GenerationJob
{
    public Guid Id { get; set; }
    public Guid? RunId { get; set; }
    public required string Model { get; set; }
    public string? Lora { get; set; }
    public int PromptCount { get; set; }
    public int Steps { get; set; }
    public GenerationState State { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
    public DateTimeOffset? FinishedAt { get; set; }
}
