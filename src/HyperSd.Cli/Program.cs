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
            EvaluateCommand.Create(),
            ToyCommand.Create(),
            RunCommand.Create(),
            RunsCommand.Create(),
            EvalsCommand.Create(),
            SchedulesCommand.Create(),
            JobsCommand.Create(),
            GcCommand.Create(),
            ServeCommand.Create(),
        };
        // Tensor threads: on a shared or small machine fewer threads than cores avoids thrashing.
        var threads = new Option<int?>("--threads") { Description = "CPU threads for tensor work (default: LibTorch's)", Recursive = true };
        root.Options.Add(threads);
        try
        {
            var parse = root.Parse(args);
            if (parse.GetValue(threads) is int n and > 0) TorchSharp.torch.set_num_threads(n);
            // Ctrl+C cancels the action, which may need a few seconds to record a cancelled run and stop its workers.
            return parse.Invoke(new InvocationConfiguration
            {
                EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = TimeSpan.FromSeconds(30)
            });
        }
        catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or NotSupportedException
                                       or HyperSd.Diffusion.IO.WeightLoadException or InvalidOperationException
                                       or UnauthorizedAccessException
                                       or System.Net.Http.HttpRequestException
                                       or HyperSd.Recipes.RecipeValidationException)
        {
            // Bad input is the user's to fix: say what is wrong, without a stack trace.
            Console.Error.WriteLine($"hypersd: error: {e.Message}");
            return 2;
        }
    }
}
