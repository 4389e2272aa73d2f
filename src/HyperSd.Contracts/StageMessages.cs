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
    int Attempt { get; }
    Guid[] InputArtifactIds { get; }
}

/// <summary>A stage attempt finished and stored its outputs.</summary>
public interface IStageEvent : IRunMessage
{
    Guid StageId { get; }
    int Attempt { get; }
    Guid[] OutputArtifactIds { get; }
}

/// <summary>Encode the recipe's image–caption pairs into latent shards.</summary>
public sealed record PrepareDataset(Guid RunId, Guid StageId, string Stage, int Attempt, Guid[] InputArtifactIds) : IStageCommand;

/// <summary>Run the teacher's guided ODE steps on the prepared dataset.</summary>
public sealed record GenerateTrajectories(Guid RunId, Guid StageId, string Stage, int Attempt, Guid[] InputArtifactIds) : IStageCommand;

/// <summary>One TSCD stage with <paramref name="Segments"/> segments (k), from the previous stage's weights when given.</summary>
public sealed record TrainSegmentStage(Guid RunId, Guid StageId, string Stage, int Attempt, Guid[] InputArtifactIds, int Segments)
    : IStageCommand;

/// <summary>Measure the teacher and the distilled student.</summary>
public sealed record EvaluateModel(Guid RunId, Guid StageId, string Stage, int Attempt, Guid[] InputArtifactIds) : IStageCommand;

/// <summary>Bulk prompt-to-image generation with the distilled student.</summary>
public sealed record GenerateImages(Guid RunId, Guid StageId, string Stage, int Attempt, Guid[] InputArtifactIds) : IStageCommand;

public sealed record DatasetPrepared(Guid RunId, Guid StageId, int Attempt, Guid[] OutputArtifactIds) : IStageEvent;

public sealed record TrajectoriesGenerated(Guid RunId, Guid StageId, int Attempt, Guid[] OutputArtifactIds) : IStageEvent;

public sealed record SegmentStageCompleted(Guid RunId, Guid StageId, int Attempt, Guid[] OutputArtifactIds) : IStageEvent;

public sealed record ModelEvaluated(Guid RunId, Guid StageId, int Attempt, Guid[] OutputArtifactIds) : IStageEvent;

public sealed record ImagesGenerated(Guid RunId, Guid StageId, int Attempt, Guid[] OutputArtifactIds) : IStageEvent;

/// <summary>A stage attempt failed. <paramref name="Transient"/>: worth retrying (I/O, timeouts); otherwise the
/// settings or data are wrong and a retry would fail the same way.</summary>
public sealed record StageFailed(Guid RunId, Guid StageId, int Attempt, string Error, bool Transient) : IRunMessage;
