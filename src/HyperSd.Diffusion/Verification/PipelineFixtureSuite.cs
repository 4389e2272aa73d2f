using System.Text.Json.Nodes;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Verification;

/// <summary>Checks the whole text-to-image pipeline (pipeline_sd15) on the sibling unet_sd15, vae_sd15 and text_sd15
/// components, with the sibling schedulers/ noise schedule: each case starts from latents_init and replays the
/// recorded scheduler noise.</summary>
public sealed class PipelineFixtureSuite : IFixtureSuite
{
    public string Folder => "pipeline_sd15";

    public IEnumerable<FixtureCheck> Run(string dir)
    {
        var fixture = new FixtureFolder(dir);
        var root = Path.GetDirectoryName(Path.GetFullPath(dir))!;
        var io = fixture.Io();
        var baseSchedule = JsonNode.Parse(File.ReadAllText(Path.Combine(root, "schedulers", "fixture.json")))!["config"]!.AsObject();
        var prompts = fixture.Json["prompts"]!.AsArray().Select(p => p!.GetValue<string>()).ToList();
        int height = fixture.Json["height"]!.GetValue<int>(), width = fixture.Json["width"]!.GetValue<int>();
        double atol = fixture.Json["atol"]?.GetValue<double>() ?? 2e-3, rtol = fixture.Json["rtol"]?.GetValue<double>() ?? 0;

        using var pipeline = new StableDiffusionPipeline(
            UNet2DConditionModel.FromPretrained(Path.Combine(root, "unet_sd15")),
            AutoencoderKL.FromPretrained(Path.Combine(root, "vae_sd15")),
            CLIPTextModel.FromPretrained(Path.Combine(root, "text_sd15", "text_encoder")),
            CLIPTokenizer.FromPretrained(Path.Combine(root, "text_sd15", "tokenizer")),
            SchedulerFactory.FromConfig(SchedulerConfig.FromJson(baseSchedule, "DDIMScheduler")));
        var checks = new List<FixtureCheck>();
        foreach (var node in fixture.Json["cases"]!.AsArray())
        {
            var tag = node!["tag"]!.GetValue<string>();
            var className = node["scheduler"]!.GetValue<string>();
            var config = (JsonObject)baseSchedule.DeepClone();
            // The tags say the spacing diffusers was given (e.g. ddim_trailing_…); otherwise the class default.
            if (tag.Contains("_trailing_")) config["timestep_spacing"] = "trailing";
            pipeline.Scheduler = SchedulerFactory.FromConfig(SchedulerConfig.FromJson(config, className));
            using var result = pipeline.Generate(new GenerationRequest
            {
                Prompts = prompts, Height = height, Width = width,
                Steps = node["steps"]!.GetValue<int>(),
                GuidanceScale = node["guidance_scale"]!.GetValue<double>(),
                Eta = node["eta"]?.GetValue<double>(),
                Latents = io["latents_init"],
                StepNoise = j => io.GetValueOrDefault($"{tag}_noise_{j}"),
            });
            checks.Add(FixtureCheck.Compare(tag, result.Images, io[$"{tag}_image"], atol, rtol));
        }
        return checks;
    }
}
