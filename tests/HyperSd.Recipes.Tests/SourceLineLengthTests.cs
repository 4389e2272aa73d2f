namespace HyperSd.Recipes.Tests;

/// <summary>Every C# file under src/ keeps its lines within the .editorconfig's max_line_length.</summary>
public class SourceLineLengthTests
{
    private const int MaxLineLength = 140;

    /// <summary>The repository root: the first folder above the test binaries holding HyperSd.Pipeline.sln.</summary>
    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "HyperSd.Pipeline.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"no HyperSd.Pipeline.sln above {AppContext.BaseDirectory}");
    }

    private static bool IsBuildOutput(string root, string file)
    {
        var parts = Path.GetRelativePath(root, file).Split(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
        return parts.Contains("bin") || parts.Contains("obj");
    }

    [Fact]
    public void Source_lines_stay_within_the_max_line_length()
    {
        var root = RepositoryRoot();
        var src = Path.Combine(root, "src");
        var files = Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories)
            .Where(f => !IsBuildOutput(src, f))
            .OrderBy(f => f, StringComparer.Ordinal)
            .ToList();
        Assert.NotEmpty(files);

        var offenders = new List<string>();
        foreach (var file in files)
        {
            var lines = File.ReadAllLines(file);
            for (var i = 0; i < lines.Length; i++)
                if (lines[i].Length > MaxLineLength)
                    offenders.Add($"{Path.GetRelativePath(root, file).Replace('\\', '/')}:{i + 1}:{lines[i].Length}");
        }

        Assert.True(
            offenders.Count == 0,
            $"{offenders.Count} line(s) under src/ are longer than {MaxLineLength} characters:\n" + string.Join("\n", offenders));
    }
}
