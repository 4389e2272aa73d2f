namespace HyperSd.Deploy.Tests;

/// <summary>The repository's files, found above the test's output folder.</summary>
public static class Repository
{
    public static string Root { get; } = FindRoot();

    public static string PathOf(string relative) => Path.Combine(Root, relative);

    public static string Read(string relative) => File.ReadAllText(PathOf(relative));

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "HyperSd.Pipeline.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"no HyperSd.Pipeline.sln above {AppContext.BaseDirectory}");
    }
}
