using System.CommandLine;
using HyperSd.Diffusion.Verification;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd verify-fixtures DIR</c>: every parity check against a folder laid out like ../shared/fixtures.</summary>
public static class VerifyFixturesCommand
{
    public static Command Create()
    {
        var dir = new Argument<DirectoryInfo>("dir") { Description = "a folder laid out like ../shared/fixtures" };
        var command = new Command("verify-fixtures", "check the diffusion core against reference fixtures") { dir };
        command.SetAction(parse =>
        {
            int passed = 0, failed = 0;
            foreach (var check in FixtureVerifier.RunAll(parse.GetValue(dir)!.FullName))
            {
                Console.WriteLine(check);
                if (check.Passed) passed++; else failed++;
            }
            Console.WriteLine($"{passed} passed, {failed} failed");
            return failed == 0 && passed > 0 ? 0 : 1;
        });
        return command;
    }
}
