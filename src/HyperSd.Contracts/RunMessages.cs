namespace HyperSd.Contracts;

/// <summary>Start a run whose recipe, run and planned stages are already in the metadata store.</summary>
public sealed record StartRun(Guid RunId) : IRunMessage;

/// <summary>Cancel a run: its open stages stop at their next heartbeat.</summary>
public sealed record CancelRun(Guid RunId, string? Reason = null) : IRunMessage;

/// <summary>Resume a failed or cancelled run from its first unfinished stage, with a new attempt.</summary>
public sealed record ResumeRun(Guid RunId) : IRunMessage;
