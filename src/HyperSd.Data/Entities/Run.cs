namespace HyperSd.Data.Entities;

public enum RunState { Pending, Running, Succeeded, Failed, Cancelled }

/// <summary>One execution of a recipe; the orchestrator owns its state machine.</summary>
public class Run
{
    public Guid Id { get; set; }
    public Guid RecipeId { get; set; }
    public required string Name { get; set; }
    /// <summary>The teacher the run distils: its recipe's model path, or its source (e.g. "toy") when it names none.</summary>
    public string BaseModel { get; set; } = "";
    /// <summary>The schedule whose firing started it, and that firing's time; null for a run submitted by hand.</summary>
    public Guid? ScheduleId { get; set; }
    public DateTimeOffset? ScheduledAt { get; set; }
    public RunState State { get; set; }
    public string? CurrentStage { get; set; }
    public string? Error { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
    public DateTimeOffset? StartedAt { get; set; }
    public DateTimeOffset? FinishedAt { get; set; }
    /// <summary>Set by <see cref="MetadataDbContext"/> on every save that adds or changes the run.</summary>
    public DateTimeOffset UpdatedAt { get; set; }

    public List<Stage> Stages { get; set; } = [];
}
