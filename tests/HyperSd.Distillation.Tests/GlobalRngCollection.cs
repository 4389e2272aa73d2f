namespace HyperSd.Distillation.Tests;

/// <summary>Tests that seed LibTorch's global generator (module initialisation draws from it) run alone, so that a
/// parallel test cannot draw from it in between.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class GlobalRngCollection
{
    public const string Name = "global torch RNG";
}
