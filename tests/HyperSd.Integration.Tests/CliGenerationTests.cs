using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Pipelines;

namespace HyperSd.Integration.Tests;

/// <summary>The CLI alone on the embedded default (no deployment): <c>hypersd generate</c> and <c>hypersd jobs submit</c>;
/// their images carry enough in their PNG text to be made again with <c>hypersd generate --from-png</c>, byte for byte.</summary>
public sealed class CliGenerationTests : IDisposable
{
    readonly string root = Directory.CreateTempSubdirectory("regen-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Fact]
    public async Task Images_from_hypersd_generate_are_made_again_byte_for_byte_from_their_png_text()
    {
        var first = Path.Combine(root, "first");
        // DDIM with trailing spacing (Hyper-SD's sampler) and η, two prompts: the text must name all of it. One image per
        // forward pass, as --from-png makes them: LibTorch's CPU kernels may round the committed teacher's UNet differently
        // at another batch size, so an image made in a batch is made again equal up to that rounding, not byte for byte.
        await WorkerProcess.RunCliAsync(root, ["generate", "--model", "toy", "-p", "a red circle in the center", "-p",
            "a blue square at the top left", "--steps", "2", "--scheduler", "DDIMScheduler", "--timestep-spacing", "trailing",
            "--eta", "0.5", "--size", "32", "--seed", "7", "--batch", "1", "--out", first]);
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

    [Fact]
    public async Task Jobs_submit_on_the_embedded_default_runs_to_the_end_and_leaves_the_manifest_and_the_pngs()
    {
        var prompts = Path.Combine(root, "prompts.txt");
        await File.WriteAllTextAsync(prompts, "a red circle in the center\n\na blue square at the top left\n");
        var output = Path.Combine(root, "out");
        await WorkerProcess.RunCliAsync(root, ["jobs", "submit", "--model", "toy", "--prompts-file", prompts, "--images-per-prompt", "3",
            "--steps", "2", "--size", "32", "--chunk-size", "4", "--seed", "10", "--wait", "--out", output, "--store-dir", Path.Combine(root, "store")]);
        var lines = (await File.ReadAllLinesAsync(Path.Combine(output, "manifest.jsonl")))
            .Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal([(0, 0, 10L), (0, 1, 11L), (0, 2, 12L), (1, 0, 13L), (1, 1, 14L), (1, 2, 15L)],
            lines.Select(l => (l.GetProperty("prompt_index").GetInt32(), l.GetProperty("image_index").GetInt32(), l.GetProperty("seed").GetInt64())));
        foreach (var line in lines)
        {
            var png = Path.Combine(output, line.GetProperty("file").GetString()!);
            Assert.Equal(line.GetProperty("sha256").GetString(), Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(
                await File.ReadAllBytesAsync(png))));
            var p = GenerationParameters.FromPngText(ImageFiles.ReadPngText(png));
            Assert.Equal((line.GetProperty("prompt").GetString(), line.GetProperty("seed").GetInt64()), (p.Prompt, p.Seed));
        }

        // a job's image is made again from its text like any other
        var first = Path.Combine(output, lines[4].GetProperty("file").GetString()!);
        var again = Path.Combine(root, "again");
        await WorkerProcess.RunCliAsync(root, ["generate", "--from-png", first, "--out", again]);
        Assert.Equal(await File.ReadAllBytesAsync(first), await File.ReadAllBytesAsync(Path.Combine(again, Path.GetFileName(first))));
    }
}
