using HyperSd.Diffusion.Clip;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Verification;

/// <summary>
/// CLIPImageProcessor and CLIPVisionModelWithProjection against transformers (<c>clip_vision</c>, written by
/// tools/fixtures/clip_vision.py): <c>image_encoder/</c> (config.json, model.safetensors, preprocessor_config.json),
/// PNG images listed in fixture.json, and io.safetensors with the reference processor's <c>pixel_values</c> and the
/// model's <c>expected_last_hidden_state</c>, <c>expected_pooler_output</c> and <c>expected_image_embeds</c>; where it
/// holds <c>pixel_values_torchvision</c> (transformers 5's default, torchvision backend), the processor against that too.
/// </summary>
public sealed class ClipVisionFixtureSuite : IFixtureSuite
{
    public string Folder => "clip_vision";

    public IEnumerable<FixtureCheck> Run(string folder)
    {
        var fixture = new FixtureFolder(folder);
        var encoderDir = Path.Combine(folder, "image_encoder");
        var images = fixture.Json["images"]!.AsArray().Select(p => Path.Combine(folder, p!.GetValue<string>())).ToList();
        // The processor reproduces Pillow's integer resize, so its output should agree to float32 round-off.
        double pixelAtol = fixture.Json["pixel_atol"]?.GetValue<double>() ?? 1e-5;
        var checks = new List<FixtureCheck>();
        var io = fixture.Io();
        try
        {
            var processor = CLIPImageProcessor.FromPretrained(encoderDir);
            using var pixels = processor.Preprocess(images);
            checks.Add(FixtureCheck.Compare("processor pixel_values", pixels, io["pixel_values"], pixelAtol, 0));
            // torchvision's resize rounds a few pixels to the next 8-bit level: agreement to one level is all there is
            if (io.TryGetValue("pixel_values_torchvision", out var torchvision))
                checks.Add(FixtureCheck.Compare("pixel_values vs torchvision", pixels, torchvision,
                    fixture.Json["torchvision_pixel_atol"]!.GetValue<double>(), 0));

            using var model = CLIPVisionModelWithProjection.FromPretrained(encoderDir);
            using var _ = no_grad();
            FixtureCheck Compare(string name, Tensor actual, string expected) =>
                FixtureCheck.Compare(name, actual, io[expected], fixture.Atol, fixture.Rtol);
            using (var output = model.forward(io["pixel_values"]))
            {
                checks.Add(Compare("last_hidden_state", output.LastHiddenState, "expected_last_hidden_state"));
                checks.Add(Compare("pooler_output", output.PoolerOutput, "expected_pooler_output"));
                checks.Add(Compare("image_embeds", output.ImageEmbeds!, "expected_image_embeds"));
            }
            using (var output = model.forward(pixels))
                checks.Add(Compare("PNG files → image_embeds", output.ImageEmbeds!, "expected_image_embeds"));

        }
        finally
        {
            foreach (var t in io.Values) t.Dispose();
        }
        return checks;
    }
}
