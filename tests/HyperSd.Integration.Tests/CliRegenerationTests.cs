using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Pipelines;

namespace HyperSd.Integration.Tests;

/// <summary><c>hypersd generate</c>'s images carry enough in their PNG text to be made again with
/// <c>hypersd generate --from-png</c>, byte for byte (no deployment: the CLI alone).</summary>
public sealed class CliRegenerationTests : IDisposable
{
    readonly string root = Directory.CreateTempSubdirectory("regen-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Fact]
    public async Task Images_from_hypersd_generate_are_made_again_byte_for_byte_from_their_png_text()
    {
        var first = Path.Combine(root, "first");
        // DDIM with trailing spacing (Hyper-SD's sampler) and η, a batch of two: the text must name all of it
        await WorkerProcess.RunCliAsync(root, ["generate", "--model", "toy", "-p", "a red circle in the center", "-p",
            "a blue square at the top left", "--steps", "2", "--scheduler", "DDIMScheduler", "--timestep-spacing", "trailing",
            "--eta", "0.5", "--size", "32", "--seed", "7", "--batch", "2", "--out", first]);
        var pngs = Directory.GetFiles(first, "*.png").Order().ToList();
        Assert.Equal(2, pngs.Count);
        var p = GenerationParameters.FromPngText(ImageFiles.ReadPngText(pngs[1]));
        Assert.Equal((new SchedulerSettings("DDIMScheduler", "trailing", 0.5), 8L, "toy"), (p.Scheduler, p.Seed, p.Model.Id));
        Assert.Contains("Sampler: DDIM, Schedule type: trailing", ImageFiles.ReadPngText(pngs[1])["parameters"]);

        var again = Path.Combine(root, "again");
        await WorkerProcess.RunCliAsync(root, ["generate", .. pngs.SelectMany(png => new[] { "--from-png", png }), "--out", again]);
        foreach (var png in pngs)
            Assert.Equal(await File.ReadAllBytesAsync(png), await File.ReadAllBytesAsync(Path.Combine(again, Path.GetFileName(png))));
    }
}
