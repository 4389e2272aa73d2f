namespace HyperSd.Data.Artifacts;

/// <summary>What the store knows of one artifact: its relative path, content hash and total size.</summary>
public sealed record ArtifactInfo(string Path, string Sha256, long SizeBytes);

/// <summary>
/// Files and folders shared by the workers, addressed by paths relative to the store's root. Artifacts are
/// written once: an import either lands whole or not at all, and never replaces different content.
/// </summary>
public interface IArtifactStore
{
    string Root { get; }

    /// <summary>The absolute path of <paramref name="relativePath"/>; refuses paths that leave the root.</summary>
    string GetFullPath(string relativePath);

    bool Exists(string relativePath);

    /// <summary>
    /// Copies the file or folder <paramref name="sourcePath"/> to <paramref name="relativePath"/> atomically.
    /// Importing the same content again is a no-op; different content at an existing path is an error.
    /// </summary>
    Task<ArtifactInfo> ImportAsync(string sourcePath, string relativePath, CancellationToken cancellationToken = default);

    /// <summary>Hash and size of the stored file or folder.</summary>
    Task<ArtifactInfo> DescribeAsync(string relativePath, CancellationToken cancellationToken = default);

    /// <summary>Throws <see cref="ArtifactCorruptException"/> if the artifact is missing or its hash differs.</summary>
    Task VerifyAsync(string relativePath, string expectedSha256, CancellationToken cancellationToken = default);
}
