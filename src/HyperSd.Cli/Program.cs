using System.CommandLine;

namespace HyperSd.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("hypersd: Hyper-SD distillation, generation and evaluation");
        root.Subcommands.Add(VerifyFixturesCommand.Create());
        return root.Parse(args).Invoke();
    }
}
