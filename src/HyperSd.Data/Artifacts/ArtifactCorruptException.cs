namespace HyperSd.Data.Artifacts;

/// <summary>A stored artifact is missing or its content no longer matches the recorded hash.</summary>
public sealed class ArtifactCorruptException(string path, string expectedSha256, string? actualSha256)
    : Exception(actualSha256 is null
        ? $"Artifact '{path}' is missing (expected sha256 {expectedSha256})."
        : $"Artifact '{path}' is corrupt: expected sha256 {expectedSha256}, got {actualSha256}.")
{
    public string Path { get; } = path;
    public string ExpectedSha256 { get; } = expectedSha256;
    /// <summary>Null when the artifact is missing.</summary>
    public string? ActualSha256 { get; } = actualSha256;
}
