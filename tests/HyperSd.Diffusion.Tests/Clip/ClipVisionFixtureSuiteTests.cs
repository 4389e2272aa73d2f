using System.Text.Json.Nodes;
using HyperSd.Diffusion.Clip;
using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Verification;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Clip;

public class ClipVisionFixtureSuiteTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("clip-vision-fixture-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    /// <summary>tools/fixtures/clip_vision.py's output, made on the GPU machine (tests/fixtures/README.md): Pillow's resize
    /// exactly, torchvision's to one 8-bit level, and the model to float32 round-off.</summary>
    [Fact]
    public void Image_processor_and_vision_model_match_transformers() =>
        Fixtures.AssertSuite<ClipVisionFixtureSuite>(output, Fixtures.Generated);

    /// <summary>The suite on a folder laid out as tools/fixtures/clip_vision.py writes it, filled from this port itself:
    /// every check passes, and a wrong expected tensor fails its check (the suite reads what the generator names).</summary>
    [Fact]
    public void Suite_reads_the_layout_the_generator_writes()
    {
        var config = new CLIPVisionConfig
        {
            HiddenSize = 32, IntermediateSize = 48, ProjectionDim = 24, NumHiddenLayers = 2, NumAttentionHeads = 4,
            ImageSize = 32, PatchSize = 8,
        };
        using var model = new CLIPVisionModelWithProjection(config);
        CLIPVisionModelTests.Randomize(model, 4);
        model.eval();
        var encoder = Path.Combine(dir, "image_encoder");
        model.SavePretrained(encoder);
        File.WriteAllText(Path.Combine(encoder, CLIPImageProcessor.ConfigName),
            """
            {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 32},
             "crop_size": {"height": 32, "width": 32}, "resample": 3}
            """);

        var names = new List<string>();
        var generator = new Generator(8);
        foreach (var (h, w) in new[] { (48, 64), (20, 28), (32, 50) })
        {
            using var image = rand([3, h, w], generator: generator);
            names.Add($"images/{h}x{w}.png");
            ImageFiles.SavePng(image, Path.Combine(dir, names[^1]));
        }
        File.WriteAllText(Path.Combine(dir, "fixture.json"), new JsonObject
        {
            ["what"] = "self-made layout check", ["images"] = new JsonArray(names.Select(n => (JsonNode?)JsonValue.Create(n)).ToArray()),
            ["atol"] = 1e-4, ["rtol"] = 1e-3, ["pixel_atol"] = 1e-5,
        }.ToJsonString());
        using var _ = no_grad();
        using var pixels = CLIPImageProcessor.FromPretrained(encoder).Preprocess(names.Select(n => Path.Combine(dir, n)));
        using var result = model.forward(pixels);
        var io = new Dictionary<string, Tensor>
        {
            ["pixel_values"] = pixels, ["expected_last_hidden_state"] = result.LastHiddenState,
            ["expected_pooler_output"] = result.PoolerOutput, ["expected_image_embeds"] = result.ImageEmbeds!,
        };
        SafeTensors.Save(Path.Combine(dir, "io.safetensors"), io);

        var checks = new ClipVisionFixtureSuite().Run(dir).ToList();
        foreach (var c in checks) output.WriteLine(c.ToString());
        Assert.Equal(5, checks.Count);
        Assert.All(checks, c => Assert.True(c.Passed, c.ToString()));

        using var wrong = result.ImageEmbeds! + 0.01;
        io["expected_image_embeds"] = wrong;
        SafeTensors.Save(Path.Combine(dir, "io.safetensors"), io);
        var failed = new ClipVisionFixtureSuite().Run(dir).Where(c => !c.Passed).Select(c => c.Name);
        Assert.Equal(["image_embeds", "PNG files → image_embeds"], failed);
    }
}
