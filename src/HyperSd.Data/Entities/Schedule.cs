namespace HyperSd.Data.Entities;

/// <summary>A recurring run of a recipe (cron in <see cref="TimeZone"/>, an IANA id).</summary>
public class Schedule
{
    public Guid Id { get; set; }
    public required string Name { get; set; }
    public Guid RecipeId { get; set; }
    public required string Cron { get; set; }
    public required string TimeZone { get; set; }
    public bool Enabled { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
}
