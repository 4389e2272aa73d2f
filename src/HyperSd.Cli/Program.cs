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
        };
        return root.Parse(args).Invoke();
    }
}
