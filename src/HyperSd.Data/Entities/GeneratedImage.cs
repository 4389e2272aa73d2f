namespace HyperSd.Data.Entities;

/// <summary>One image of a <see cref="GenerationJob"/>, recorded once its PNG is in place; (job, prompt index, image
/// index) is unique, so an image is never recorded twice.</summary>
public class GeneratedImage
{
    public Guid Id { get; set; }
    public Guid JobId { get; set; }
    public int PromptIndex { get; set; }
    public int ImageIndex { get; set; }
    public required string Prompt { get; set; }
    public long Seed { get; set; }
    /// <summary>The PNG, relative to the artifact root.</summary>
    public required string Path { get; set; }
    public required string Sha256 { get; set; }
    /// <summary>The stage (chunk) and attempt that made it.</summary>
    public Guid StageId { get; set; }
    public int Attempt { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
}
