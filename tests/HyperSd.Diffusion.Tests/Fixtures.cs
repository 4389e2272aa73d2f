using HyperSd.Diffusion.Verification;
using Xunit.Abstractions;

namespace HyperSd.Diffusion.Tests;

/// <summary>Locates ../shared/fixtures beside the checkout (or $HYPERSD_FIXTURES) and the repository's own generated
/// fixtures (tests/fixtures), and runs fixture suites.</summary>
public static class Fixtures
{
    static readonly string RepoRoot = LocateRepoRoot();

    public static string Root { get; } = Environment.GetEnvironmentVariable("HYPERSD_FIXTURES") is { Length: > 0 } env
        ? env : System.IO.Path.GetFullPath(System.IO.Path.Combine(RepoRoot, "..", "shared", "fixtures"));

    /// <summary>Fixtures that ../shared does not hold, made by tools/fixtures where PyTorch runs and committed
    /// (tests/fixtures/README.md).</summary>
    public static string Generated { get; } = System.IO.Path.Combine(RepoRoot, "tests", "fixtures");

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    static string LocateRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "HyperSd.Pipeline.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("cannot find the repository root (HyperSd.Pipeline.sln) above " + AppContext.BaseDirectory);
    }

    /// <summary>Runs the suite of type <typeparamref name="TSuite"/> on its fixture folder under <paramref name="root"/>
    /// (../shared/fixtures by default), logs every check and asserts that all pass.</summary>
    public static void AssertSuite<TSuite>(ITestOutputHelper output, string? root = null) where TSuite : IFixtureSuite, new()
    {
        var suite = new TSuite();
        var checks = suite.Run(System.IO.Path.Combine(root ?? Root, suite.Folder)).ToList();
        foreach (var c in checks) output.WriteLine(c.ToString());
        Assert.NotEmpty(checks);
        Assert.All(checks, c => Assert.True(c.Passed, c.ToString()));
    }
}
