namespace HyperSd.Contracts;

/// <summary>The worker roles; each consumes the queue of the same name.</summary>
public static class Roles
{
    public const string Orchestrator = "orchestrator";
    public const string DatasetPrep = "dataset-prep";
    public const string TeacherTrajectories = "teacher-trajectories";
    public const string SegmentConsistency = "segment-consistency";
    public const string Evaluator = "evaluator";
    public const string Generator = "generator";

    public static readonly IReadOnlyList<string> All = [Orchestrator, DatasetPrep, TeacherTrajectories, SegmentConsistency, Evaluator, Generator];

    /// <summary>The queue address of a role, for sending commands.</summary>
    public static Uri Queue(string role) => new($"queue:{role}");
}
