namespace HyperSd.Data.Entities;

/// <summary>What a firing does while a run it started earlier is still pending or running.</summary>
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
}
