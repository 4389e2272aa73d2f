using HyperSd.Cli;

namespace HyperSd.Api.Tests;

/// <summary>The CLI in this process, with what it writes to stderr (Console is global: its tests share one collection).</summary>
static class CliRun
{
    public static (int Code, string Error) Run(string[] args)
    {
        var error = new StringWriter();
        var was = Console.Error;
        Console.SetError(error);
        try { return (Program.Main(args), error.ToString()); }
        finally { Console.SetError(was); }
    }

    /// <summary>Runs the CLI; on a non-zero exit the assertion shows what it wrote to stderr.</summary>
    public static void Succeeds(string[] args)
    {
        var (code, error) = Run(args);
        Assert.True(code == 0, $"hypersd {args[0]} exited with {code}: {error}");
    }
}
