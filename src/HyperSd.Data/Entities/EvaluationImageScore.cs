namespace HyperSd.Data.Entities;

/// <summary>
/// One evaluated image's score by one reward model (the reward-scorer's score-evaluation stage): the image is the
/// evaluation's prompt <see cref="PromptIndex"/> made by the model with the sampler at the step count. Its mean over the
/// prompts is the evaluation row of metric <see cref="Reward"/>.
/// </summary>
public class EvaluationImageScore
{
    public Guid Id { get; set; }
    public Guid RunId { get; set; }
    /// <summary>The scoring stage.</summary>
    public Guid StageId { get; set; }
    public required string Model { get; set; }
    public required string Sampler { get; set; }
    public int Steps { get; set; }
    public int PromptIndex { get; set; }
    public required string Reward { get; set; }
    public double Score { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
}
