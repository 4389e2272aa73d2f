namespace HyperSd.Data.Entities;

public enum StageState { Pending, Dispatched, Running, Succeeded, Failed, Cancelled }

/// <summary>
/// One step of a run, executed by a worker of <see cref="Role"/>. A worker leases it (owner, heartbeat, expiry)
/// instead of holding the message, so the orchestrator can re-dispatch it when the heartbeat stops.
/// </summary>
public class Stage : IVersioned
{
    public Guid Id { get; set; }
    public Guid RunId { get; set; }
    /// <summary>Unique within the run, e.g. "dataset", "trajectories", "tscd-k8", "evaluate".</summary>
    public required string Name { get; set; }
    /// <summary>Position in the run's order.</summary>
    public int Index { get; set; }
    /// <summary>Its kind in the stage catalogue, e.g. "train-segment-stage".</summary>
    public required string Kind { get; set; }
    /// <summary>The worker role (and queue) that executes it, e.g. "dataset-prep".</summary>
    public required string Role { get; set; }
    public StageState State { get; set; }
    public int Attempt { get; set; }
    public int MaxAttempts { get; set; }
    /// <summary>Earliest time of the next dispatch after a failure (backoff).</summary>
    public DateTimeOffset? NextAttemptAt { get; set; }
    public DateTimeOffset? DispatchedAt { get; set; }
    public string? LeaseOwner { get; set; }
    public DateTimeOffset? LeaseHeartbeatAt { get; set; }
    public DateTimeOffset? LeaseExpiresAt { get; set; }
    /// <summary>The last checkpoint, where a re-dispatched stage resumes.</summary>
    public Guid? CheckpointArtifactId { get; set; }
    /// <summary>When the attempt last reported progress (the server's clock): a running stage with none for its kind's
    /// limit is hung.</summary>
    public DateTimeOffset? ProgressAt { get; set; }
    /// <summary>Fraction done, 0..1.</summary>
    public double Progress { get; set; }
    /// <summary>JSON with stage-specific progress (step, loss, ...).</summary>
    public string? ProgressDetail { get; set; }
    /// <summary>The stage kind's typed settings, resolved from the recipe at submission (JSON); what its worker runs with.</summary>
    public string SettingsJson { get; set; } = "{}";
    public DateTimeOffset? StartedAt { get; set; }
    public DateTimeOffset? FinishedAt { get; set; }
    public string? Error { get; set; }
    public int Version { get; set; }

    public List<StageAttempt> Attempts { get; set; } = [];
}
