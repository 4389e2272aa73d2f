using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Pipelines;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Pipelines;

/// <summary>The pipeline on the tiny fixture components, assembled as a diffusers pipeline folder.</summary>
public class StableDiffusionPipelineTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("pipe-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    /// <summary>Lays the fixture components out as a diffusers pipeline folder (what a user downloads).</summary>
    public static string TinyPipelineFolder(string root)
    {
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(to);
            foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)), true);
        }
        Copy(Fixtures.Path("unet_sd15"), Path.Combine(root, "unet"));
        Copy(Fixtures.Path("vae_sd15"), Path.Combine(root, "vae"));
        Copy(Fixtures.Path("text_sd15", "text_encoder"), Path.Combine(root, "text_encoder"));
        Copy(Fixtures.Path("text_sd15", "tokenizer"), Path.Combine(root, "tokenizer"));
        Directory.CreateDirectory(Path.Combine(root, "scheduler"));
        var schedule = StableDiffusionPipeline.StableDiffusion15Schedule;
        schedule["timestep_spacing"] = "trailing";
        File.WriteAllText(Path.Combine(root, "scheduler", "scheduler_config.json"), schedule.ToJsonString());
        File.WriteAllText(Path.Combine(root, "model_index.json"),
            """{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"]}""");
        return root;
    }

    [Fact]
    public void Seeds_are_per_image_so_batching_does_not_change_an_image()
    {
        using var pipe = StableDiffusionPipeline.FromPretrained(TinyPipelineFolder(dir), scheduler: "TCDScheduler");
        var request = new GenerationRequest { Prompts = ["a red circle", "a blue square"], Steps = 2, Height = 64, Width = 64, Seeds = [7, 8], Eta = 0.5 };
        using var both = pipe.Generate(request);
        using var second = pipe.Generate(request with { Prompts = ["a blue square"], Seeds = [8] });
        Assert.Equal(new long[] { 2, 3, 64, 64 }, both.Images.shape);
        Assert.True(both.Images[1].allclose(second.Images[0], atol: 1e-5));
        Assert.False(both.Images[0].allclose(both.Images[1], atol: 1e-3));
    }

    [Fact]
    public void Pngs_carry_the_parameters_that_reproduce_them()
    {
        using var pipe = StableDiffusionPipeline.FromPretrained(TinyPipelineFolder(dir));
        var lora = LoraAdapter.Create(pipe.Unet, new LoraConfig(2, 2));
        LoraFormats.Save(lora, Path.Combine(dir, "hyper.safetensors"), LoraFileFormat.Kohya);
        pipe.LoadLora(Path.Combine(dir, "hyper.safetensors"), 0.8);
        using var result = pipe.Generate(new GenerationRequest
        {
            Prompts = ["a red circle"], NegativePrompts = ["blurry"], Steps = 4, GuidanceScale = 3, Height = 64, Width = 64, Seeds = [42], Model = new("tiny"),
        });
        var path = Assert.Single(result.SavePngs(Path.Combine(dir, "out")));
        var text = ImageFiles.ReadPngText(path);
        var loraFile = File.ReadAllBytes(Path.Combine(dir, "hyper.safetensors"));
        // A1111's AutoV3: the sha256 of what follows the safetensors header
        var autoV3 = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(loraFile.AsSpan(8 + (int)BitConverter.ToInt64(loraFile))))[..12];
        Assert.Equal("a red circle\nNegative prompt: blurry\nSteps: 4, Sampler: DDIM, Schedule type: trailing, CFG scale: 3, Seed: 42, " +
                     "Size: 64x64, Eta: 0, Model: tiny, Lora: hyper:0.8, Lora hashes: \"hyper: " + autoV3 + "\"", text["parameters"]);
        var p = GenerationParameters.FromPngText(text);
        Assert.Equal(("a red circle", "blurry", 4, 42L, "tiny"), (p.Prompt, p.NegativePrompt, p.Steps, p.Seed, p.Model.Id));
        Assert.Equal(new SchedulerSettings("DDIMScheduler", "trailing", 0), p.Scheduler);
        Assert.Equal(new LoraReference("hyper", 0.8, Path.Combine(dir, "hyper.safetensors"),
            Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(loraFile)), autoV3), Assert.Single(p.Loras));

        using var again = pipe.Generate(new GenerationRequest
        {
            Prompts = [p.Prompt], NegativePrompts = [p.NegativePrompt], Steps = p.Steps, GuidanceScale = p.GuidanceScale,
            Height = p.Height, Width = p.Width, Seeds = [p.Seed],
        });
        Assert.True(again.Images.allclose(result.Images, atol: 1e-6));
    }

    [Fact]
    public void A_height_not_divisible_by_the_vae_factor_is_refused()
    {
        using var pipe = StableDiffusionPipeline.FromPretrained(TinyPipelineFolder(dir));
        var e = Assert.Throws<ArgumentException>(() => pipe.Generate(new GenerationRequest { Prompts = ["x"], Height = 60, Width = 64 }));
        Assert.Contains("divisible by 8", e.Message);
        Assert.Contains("60x64", e.Message);
    }

    [Fact]
    public void Save_then_load_gives_the_same_images()
    {
        var request = new GenerationRequest { Prompts = ["a green square at the top left"], Steps = 2, Height = 64, Width = 64, Seeds = [3] };
        using var pipe = StableDiffusionPipeline.FromPretrained(TinyPipelineFolder(Path.Combine(dir, "a")), scheduler: "TCDScheduler");
        pipe.SavePretrained(Path.Combine(dir, "b"));
        using var reloaded = StableDiffusionPipeline.FromPretrained(Path.Combine(dir, "b"));
        Assert.IsType<Diffusion.Schedulers.TCDScheduler>(reloaded.Scheduler);
        using var a = pipe.Generate(request);
        using var b = reloaded.Generate(request);
        Assert.True(a.Images.eq(b.Images).all().item<bool>());
        using (var any = DiffusionPipeline.FromPretrained(Path.Combine(dir, "b"))) Assert.IsType<StableDiffusionPipeline>(any);
        Assert.Equal(File.ReadAllLines(Fixtures.Path("text_sd15", "tokenizer", "merges.txt")).Where(l => l.Length > 0),
            File.ReadAllLines(Path.Combine(dir, "b", "tokenizer", "merges.txt")));
    }

    [Fact]
    public void A_folder_without_model_index_is_a_clear_error()
    {
        var e = Assert.Throws<FileNotFoundException>(() => StableDiffusionPipeline.FromPretrained(dir));
        Assert.Contains("model_index.json", e.Message);
    }
}
