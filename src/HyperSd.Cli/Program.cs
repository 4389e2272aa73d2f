using System.CommandLine;
using HyperSd.Cli.Commands;

namespace HyperSd.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("hypersd: Hyper-SD distillation, generation and evaluation")
        {
            VerifyFixturesCommand.Create(),
            BenchCommand.Create(),
            GenerateCommand.Create(),
            ToyCommand.Create(),
        };
        try
        {
            return root.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or NotSupportedException
                                       or InvalidOperationException or UnauthorizedAccessException)
        {
            // Bad input is the user's to fix: say what is wrong, without a stack trace.
            Console.Error.WriteLine($"hypersd: error: {e.Message}");
            return 2;
        }
    }
}
