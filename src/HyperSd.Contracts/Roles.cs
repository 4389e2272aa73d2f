namespace HyperSd.Contracts;

/// <summary>The built-in worker roles; each consumes the queue of the same name. A stage kind names its role in the
/// stage catalogue, which is where the full list of roles comes from.</summary>
public static class Roles
{
    public const string Orchestrator = "orchestrator";
    public const string DatasetPrep = "dataset-prep";
    public const string TeacherTrajectories = "teacher-trajectories";
    public const string SegmentConsistency = "segment-consistency";
    public const string RewardScorer = "reward-scorer";
    public const string DmdTrainer = "dmd-trainer";
    public const string LoraMerger = "lora-merger";
    public const string Evaluator = "evaluator";
    public const string Generator = "generator";

    /// <summary>The queue address of a role, for sending commands.</summary>
    public static Uri Queue(string role) => new($"queue:{role}");
}
