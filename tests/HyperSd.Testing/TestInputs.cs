using HyperSd.Services.Runs;

namespace HyperSd.Testing;

/// <summary>The input roots of tests whose recipes name models and data they wrote under the temp folder.</summary>
public static class TestInputs
{
    public static InputRoots Temp => new() { DataRoot = Path.GetTempPath(), ModelsRoot = Path.GetTempPath() };
}
