using HyperSd.Diffusion.Verification;
using Xunit.Abstractions;

namespace HyperSd.Diffusion.Tests;

/// <summary>Locates ../shared/fixtures beside the checkout (or $HYPERSD_FIXTURES) and runs fixture suites.</summary>
public static class Fixtures
{
    public static string Root { get; } = Locate();

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    static string Locate()
    {
        var env = Environment.GetEnvironmentVariable("HYPERSD_FIXTURES");
        if (!string.IsNullOrEmpty(env)) return env;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "HyperSd.Pipeline.sln")))
                return System.IO.Path.GetFullPath(System.IO.Path.Combine(dir.FullName, "..", "shared", "fixtures"));
        throw new DirectoryNotFoundException("cannot find the repository root (HyperSd.Pipeline.sln) above " + AppContext.BaseDirectory);
    }

    /// <summary>Runs the suite of type <typeparamref name="TSuite"/> on its shared fixture folder, logs every check
    /// and asserts that all pass.</summary>
    public static void AssertSuite<TSuite>(ITestOutputHelper output) where TSuite : IFixtureSuite, new()
    {
        var suite = new TSuite();
        var checks = suite.Run(Path(suite.Folder)).ToList();
        foreach (var c in checks) output.WriteLine(c.ToString());
        Assert.NotEmpty(checks);
        Assert.All(checks, c => Assert.True(c.Passed, c.ToString()));
    }
}
