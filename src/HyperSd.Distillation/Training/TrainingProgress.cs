namespace HyperSd.Distillation.Training;

/// <summary>A training progress report: what the services forward to the metadata store and the CLI shows.</summary>
public sealed record TrainingProgress(
    string Stage, int Step, int TotalSteps, IReadOnlyDictionary<string, double> Losses, double StepsPerSecond)
{
    public override string ToString() =>
        $"{Stage} {Step}/{TotalSteps} " + string.Join(" ", Losses.Select(kv => $"{kv.Key}={kv.Value:G4}")) +
        $" ({StepsPerSecond:F1} steps/s)";
}
