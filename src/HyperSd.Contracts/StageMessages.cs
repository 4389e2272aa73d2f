namespace HyperSd.Contracts;

/// <summary>Every message of a run carries its id.</summary>
public interface IRunMessage
{
    Guid RunId { get; }
}

/// <summary>
/// An order to run one attempt of one stage. Heavy data never travels: <see cref="InputArtifactIds"/> name artifacts
/// in the artifact store. (run, stage, attempt) identifies the work, so a redelivered command leases nothing twice.
/// </summary>
public interface IStageCommand : IRunMessage
{
    Guid StageId { get; }
    /// <summary>The stage's name within the run ("dataset", "tscd-k8", ...).</summary>
    string Stage { get; }
    /// <summary>The stage's kind in the stage catalogue; the worker runs that kind's work with the stage's stored settings.</summary>
    string Kind { get; }
    int Attempt { get; }
    Guid[] InputArtifactIds { get; }
}

/// <summary>Run one attempt of a stage of any kind, sent to the queue of the kind's role. The stage's typed settings are
/// read from the metadata store, where they were stored at submission.</summary>
public sealed record RunStage(Guid RunId, Guid StageId, string Stage, string Kind, int Attempt, Guid[] InputArtifactIds) : IStageCommand;

/// <summary>A stage attempt finished and stored its outputs.</summary>
public sealed record StageCompleted(Guid RunId, Guid StageId, int Attempt, Guid[] OutputArtifactIds) : IRunMessage;

/// <summary>A stage attempt failed. <paramref name="Transient"/>: worth retrying (I/O, timeouts); otherwise the
/// settings or data are wrong and a retry would fail the same way.</summary>
public sealed record StageFailed(Guid RunId, Guid StageId, int Attempt, string Error, bool Transient) : IRunMessage;
