namespace HyperSd.Data.Entities;

public enum AttemptOutcome { Succeeded, Failed, Lost, Cancelled }

/// <summary>One try at a stage by one worker; <see cref="Outcome"/> is null while it runs.</summary>
public class StageAttempt
{
    public Guid Id { get; set; }
    public Guid StageId { get; set; }
    public int Attempt { get; set; }
    public required string Owner { get; set; }
    public DateTimeOffset StartedAt { get; set; }
    public DateTimeOffset? FinishedAt { get; set; }
    public AttemptOutcome? Outcome { get; set; }
    public string? Error { get; set; }
    /// <summary>For a failed attempt, whether its error is worth retrying (what its failed event said).</summary>
    public bool? Transient { get; set; }
}
