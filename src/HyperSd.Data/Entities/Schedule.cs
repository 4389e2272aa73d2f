namespace HyperSd.Data.Entities;

/// <summary>What a firing does while a run it started earlier is still pending or running: skip it, or queue it (one held
/// firing, started when that run ends; later firings fold into it).</summary>
public enum ScheduleOverlap { Skip, Queue }

/// <summary>A recurring run of a stored recipe: a cron expression in <see cref="TimeZone"/> (an IANA id); paused while not
/// <see cref="Enabled"/>.</summary>
public class Schedule
{
    public Guid Id { get; set; }
    public required string Name { get; set; }
    public Guid RecipeId { get; set; }
    public required string Cron { get; set; }
    public required string TimeZone { get; set; }
    public bool Enabled { get; set; }
    public ScheduleOverlap Overlap { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
    /// <summary>A firing held back while the schedule's previous run was active (<see cref="ScheduleOverlap.Queue"/>);
    /// started, and cleared, once that run has ended.</summary>
    public DateTimeOffset? QueuedFiringAt { get; set; }
}
