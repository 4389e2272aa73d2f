namespace HyperSd.Data.Artifacts;

/// <summary>An artifact store on a directory tree (a local folder or a volume shared by the workers).</summary>
public sealed class FileSystemArtifactStore : IArtifactStore
{
    public FileSystemArtifactStore(string root)
    {
        Root = Path.GetFullPath(root);
        Directory.CreateDirectory(Root);
    }

    public string Root { get; }

    public string GetFullPath(string relativePath)
    {
        if (string.IsNullOrWhiteSpace(relativePath))
            throw new ArgumentException("Artifact path is empty.", nameof(relativePath));
        if (Path.IsPathRooted(relativePath))
            throw new ArgumentException(
                $"Artifact path '{relativePath}' is absolute; expected a path relative to the store root.", nameof(relativePath));
        if (relativePath.Split('/', '\\').Any(segment => segment == ".."))
            throw new ArgumentException(
                $"Artifact path '{relativePath}' contains '..'; expected a path inside the store root.", nameof(relativePath));
        var full = Path.GetFullPath(Path.Combine(Root, relativePath));
        if (!full.StartsWith(Root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new ArgumentException(
                $"Artifact path '{relativePath}' resolves to '{full}', outside the store root '{Root}'.", nameof(relativePath));
        return full;
    }

    public bool Exists(string relativePath)
    {
        var full = GetFullPath(relativePath);
        return File.Exists(full) || Directory.Exists(full);
    }

    public async Task<ArtifactInfo> ImportAsync(string sourcePath, string relativePath, CancellationToken cancellationToken = default)
    {
        var target = GetFullPath(relativePath);
        var isDirectory = Directory.Exists(sourcePath);
        if (!isDirectory && !File.Exists(sourcePath))
            throw new FileNotFoundException(
                $"Cannot import '{sourcePath}' as artifact '{relativePath}': no such file or folder.", sourcePath);

        string? sha256 = null;
        if (!Exists(relativePath))
        {
            // Copy next to the target under a name no reader looks for, then rename: the rename is atomic within
            // a file system, so a crash leaves only a temp entry, never a half-written artifact at the real path.
            var parent = Path.GetDirectoryName(target)!;
            Directory.CreateDirectory(parent);
            var temp = Path.Combine(parent, $".{Path.GetFileName(target)}.partial-{Guid.NewGuid():N}");
            try
            {
                if (isDirectory)
                    await CopyDirectoryAsync(sourcePath, temp, cancellationToken);
                else
                    await CopyFileAsync(sourcePath, temp, cancellationToken);
                long size;
                (sha256, size) = await ContentHash.OfAsync(temp, cancellationToken);
                if (isDirectory)
                    Directory.Move(temp, target);
                else
                    File.Move(temp, target, overwrite: false);
                return new ArtifactInfo(relativePath, sha256, size);
            }
            catch (IOException) when (Exists(relativePath))
            {
                // Another importer got there first; compare contents below.
            }
            finally
            {
                if (Directory.Exists(temp))
                    Directory.Delete(temp, recursive: true);
                else if (File.Exists(temp))
                    File.Delete(temp);
            }
        }

        sha256 ??= (await ContentHash.OfAsync(sourcePath, cancellationToken)).Sha256;
        var existing = await DescribeAsync(relativePath, cancellationToken);
        if (existing.Sha256 != sha256)
            throw new InvalidOperationException(
                $"Artifact '{relativePath}' already exists with sha256 {existing.Sha256}; the import has sha256 {sha256}.");
        return existing;
    }

    public async Task<ArtifactInfo> DescribeAsync(string relativePath, CancellationToken cancellationToken = default)
    {
        var full = GetFullPath(relativePath);
        if (!File.Exists(full) && !Directory.Exists(full))
            throw new FileNotFoundException($"Artifact '{relativePath}' does not exist under '{Root}'.", full);
        var (sha256, size) = await ContentHash.OfAsync(full, cancellationToken);
        return new ArtifactInfo(relativePath, sha256, size);
    }

    public async Task VerifyAsync(string relativePath, string expectedSha256, CancellationToken cancellationToken = default)
    {
        if (!Exists(relativePath))
            throw new ArtifactCorruptException(relativePath, expectedSha256, null);
        var actual = (await ContentHash.OfAsync(GetFullPath(relativePath), cancellationToken)).Sha256;
        if (!string.Equals(actual, expectedSha256, StringComparison.OrdinalIgnoreCase))
            throw new ArtifactCorruptException(relativePath, expectedSha256, actual);
    }

    private static async Task CopyFileAsync(string source, string destination, CancellationToken cancellationToken)
    {
        await using var input = File.OpenRead(source);
        await using var output = new FileStream(destination, FileMode.CreateNew, FileAccess.Write);
        await input.CopyToAsync(output, cancellationToken);
        // On disk before the rename makes it visible: a crash must not leave a renamed but empty file.
        output.Flush(flushToDisk: true);
    }

    private static async Task CopyDirectoryAsync(string source, string destination, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(destination);
        foreach (var directory in Directory.EnumerateDirectories(source, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(destination, Path.GetRelativePath(source, directory)));
        foreach (var file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
            await CopyFileAsync(file, Path.Combine(destination, Path.GetRelativePath(source, file)), cancellationToken);
    }
}
