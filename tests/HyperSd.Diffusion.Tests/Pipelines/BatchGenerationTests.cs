using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Pipelines;

namespace HyperSd.Diffusion.Tests.Pipelines;

public class BatchGenerationTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("batchgen-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    static readonly GenerationRequest Settings = new() { Prompts = [], Steps = 2, Height = 64, Width = 64, Model = new("tiny") };
    static readonly GenerationItem[] Jobs = Enumerable.Range(0, 5).Select(i => new GenerationItem($"{i:D5}.png", i % 2 == 0 ? "a red circle" : "a blue square", 100 + i)).ToArray();

    [Fact]
    public void An_interrupted_generation_resumes_with_the_images_it_lacks()
    {
        using var pipe = StableDiffusionPipeline.FromPretrained(StableDiffusionPipelineTests.TinyPipelineFolder(Path.Combine(dir, "model")));
        var whole = Path.Combine(dir, "whole");
        BatchGeneration.Run(pipe.Generate, Jobs, whole, Settings, batchSize: 2, resume: true);

        // stopped after the first batch, with a half-written file left behind
        var resumed = Path.Combine(dir, "resumed");
        using var cts = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() =>
            BatchGeneration.Run(pipe.Generate, Jobs, resumed, Settings, 2, resume: true, progress: n => { if (n == 2) cts.Cancel(); }, cancellationToken: cts.Token));
        Assert.Equal(["00000.png", "00001.png"], Directory.GetFiles(resumed).Select(Path.GetFileName).Order());
        File.WriteAllText(Path.Combine(resumed, "00002.png.tmp"), "half");
        var kept = File.GetLastWriteTimeUtc(Path.Combine(resumed, "00000.png"));

        var reported = new List<int>();
        BatchGeneration.Run(pipe.Generate, Jobs, resumed, Settings, 2, resume: true, progress: reported.Add);
        Assert.Equal([2, 4, 5], reported);
        Assert.Equal(kept, File.GetLastWriteTimeUtc(Path.Combine(resumed, "00000.png")));
        Assert.Equal(Jobs.Select(j => j.File), Directory.GetFiles(resumed).Select(Path.GetFileName).Order());
        foreach (var job in Jobs)
        {
            var p = GenerationParameters.FromPngText(ImageFiles.ReadPngText(Path.Combine(resumed, job.File)));
            Assert.Equal((job.Prompt, job.Seed, 2, "tiny"), (p.Prompt, p.Seed, p.Steps, p.Model.Id));
            // the same image as the uninterrupted run, byte for byte
            Assert.Equal(File.ReadAllBytes(Path.Combine(whole, job.File)), File.ReadAllBytes(Path.Combine(resumed, job.File)));
        }
    }

    [Fact]
    public void Without_resume_every_file_is_made_anew()
    {
        using var pipe = StableDiffusionPipeline.FromPretrained(StableDiffusionPipelineTests.TinyPipelineFolder(Path.Combine(dir, "model")));
        var outDir = Path.Combine(dir, "out");
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "00000.png"), "an old file");
        BatchGeneration.Run(pipe.Generate, Jobs.Take(1).ToList(), outDir, Settings, 4, resume: false);
        Assert.Equal("a red circle", GenerationParameters.FromPngText(ImageFiles.ReadPngText(Path.Combine(outDir, "00000.png"))).Prompt);
    }
}
