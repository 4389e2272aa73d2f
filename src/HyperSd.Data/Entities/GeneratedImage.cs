namespace HyperSd.Data.Entities;

/// <summary>One image of a <see cref="GenerationJob"/>, recorded once its PNG is in place; (job, prompt index, image
/// index, candidate) is unique, so an image is never recorded twice. A best-of-n job records n candidates per requested
/// image; its scoring stage scores each and keeps the best.</summary>
public class GeneratedImage
{
    public Guid Id { get; set; }
    public Guid JobId { get; set; }
    public int PromptIndex { get; set; }
    public int ImageIndex { get; set; }
    /// <summary>Which of the requested image's candidates (0 to best_of − 1); 0 in a job without best-of-n.</summary>
    public int Candidate { get; set; }
    public required string Prompt { get; set; }
    public long Seed { get; set; }
    /// <summary>The PNG, relative to the artifact root.</summary>
    public required string Path { get; set; }
    public required string Sha256 { get; set; }
    /// <summary>The stage (chunk) and attempt that made it.</summary>
    public Guid StageId { get; set; }
    public int Attempt { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
    /// <summary>The reward model's score of the image for its prompt; null until the job's scoring stage scores it (or
    /// when the job scores nothing).</summary>
    public double? Score { get; set; }
    /// <summary>The reward that gave <see cref="Score"/>.</summary>
    public string? RewardName { get; set; }
    /// <summary>The image the job delivers for its (prompt, image): every image of a job that scores nothing, else the
    /// best-scored candidate of each group once all of the group's candidates are scored.</summary>
    public bool Kept { get; set; }
}
