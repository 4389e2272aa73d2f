namespace HyperSd.Data.Entities;

/// <summary>
/// A bulk prompt-to-image job. Its chunks are the stages of <see cref="RunId"/> (one generator stage per chunk), so
/// they are leased, heartbeated, re-dispatched, cancelled and resumed as any stage is; the run's state is the job's.
/// </summary>
public class GenerationJob
{
    public Guid Id { get; set; }
    public Guid? RunId { get; set; }
    /// <summary>Unique; also the folder its images are written to.</summary>
    public required string Name { get; set; }
    /// <summary>The model as submitted: "toy", a folder or a file.</summary>
    public required string Model { get; set; }
    public int PromptCount { get; set; }
    /// <summary>The images requested (what the job delivers); a best-of-n job makes <see cref="BestOf"/> candidates of each.</summary>
    public int ImageCount { get; set; }
    /// <summary>Candidates per requested image (1: no best-of-n).</summary>
    public int BestOf { get; set; } = 1;
    /// <summary>The reward its scoring stage scores every image with; null when the job scores nothing.</summary>
    public string? Reward { get; set; }
    public int ChunkCount { get; set; }
    public int Steps { get; set; }
    /// <summary>Where its images are, relative to the artifact root.</summary>
    public required string OutputPath { get; set; }
    /// <summary>The validated job spec (JSON), as the chunks were planned from it.</summary>
    public string SpecJson { get; set; } = "{}";
    public DateTimeOffset CreatedAt { get; set; }
}
