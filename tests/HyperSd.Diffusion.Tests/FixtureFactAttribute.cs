namespace HyperSd.Diffusion.Tests;

/// <summary>A parity test on a fixture folder that ../shared/fixtures may not hold yet (its generator lives in
/// tools/fixtures and needs PyTorch): skipped, saying so and how to make it, while the folder is absent.</summary>
public sealed class FixtureFactAttribute : FactAttribute
{
    public FixtureFactAttribute(string folder, string generator)
    {
        var path = Fixtures.Path(folder);
        if (!Directory.Exists(path))
            Skip = $"fixture folder {path} is absent: generate it with `python {generator}` (PyTorch + transformers)";
    }
}
