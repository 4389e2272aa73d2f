using System.Security.Cryptography;
using System.Text;

namespace HyperSd.Data.Artifacts;

/// <summary>
/// sha256 of a file, or of a folder: sha256 over its files' sorted "relative/path\0&lt;file sha256&gt;\n" lines,
/// so a folder's hash depends on names and contents only, not on timestamps or enumeration order.
/// </summary>
public static class ContentHash
{
    public static async Task<(string Sha256, long SizeBytes)> OfAsync(string path, CancellationToken cancellationToken = default)
    {
        if (File.Exists(path))
            return (await OfFileAsync(path, cancellationToken), new FileInfo(path).Length);
        if (!Directory.Exists(path))
            throw new FileNotFoundException($"No file or folder at '{path}'.", path);

        var files = Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories)
            .Select(f => (Full: f, Relative: Path.GetRelativePath(path, f).Replace(Path.DirectorySeparatorChar, '/')))
            .OrderBy(f => f.Relative, StringComparer.Ordinal);
        var lines = new StringBuilder();
        long size = 0;
        foreach (var (full, relative) in files)
        {
            lines.Append(relative).Append('\0').Append(await OfFileAsync(full, cancellationToken)).Append('\n');
            size += new FileInfo(full).Length;
        }
        return (Hex(SHA256.HashData(Encoding.UTF8.GetBytes(lines.ToString()))), size);
    }

    public static async Task<string> OfFileAsync(string path, CancellationToken cancellationToken = default)
    {
        await using var stream = File.OpenRead(path);
        return Hex(await SHA256.HashDataAsync(stream, cancellationToken));
    }

    private static string Hex(byte[] hash) => Convert.ToHexStringLower(hash);
}
