namespace HyperSd.Data.Entities;

/// <summary>
/// One metric value. (run, model, sampler, steps, metric) is unique, so a redelivered evaluation cannot add rows.
/// </summary>
public class Evaluation
{
    public Guid Id { get; set; }
    public Guid RunId { get; set; }
    public Guid StageId { get; set; }
    public required string Model { get; set; }
    public required string Sampler { get; set; }
    public int Steps { get; set; }
    public required string Metric { get; set; }
    public double Value { get; set; }
    /// <summary>The 95 % interval, where the metric has one (adherence, KID, scores; not the Fréchet distance).</summary>
    public double? Low { get; set; }
    public double? High { get; set; }
    public DateTimeOffset CreatedAt { get; set; }
}
