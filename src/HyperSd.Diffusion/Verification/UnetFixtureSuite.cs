using HyperSd.Diffusion.Models;
using HyperSd.Diffusion.Models.Unets;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Verification;

/// <summary>Checks UNet2DConditionModel against a fixture folder: diffusers layout (config.json + weights),
/// io.safetensors with sample, timestep, encoder_hidden_states (and text_embeds/time_ids for SDXL) → expected;
/// fixture.json with atol/rtol and the parameter count.</summary>
public abstract class UnetFixtureSuite(string folder) : IFixtureSuite
{
    public string Folder => folder;

    public IEnumerable<FixtureCheck> Run(string dir)
    {
        var fixture = new FixtureFolder(dir);
        var checks = new List<FixtureCheck>();
        var io = fixture.Io();
        try
        {
            using var unet = UNet2DConditionModel.FromPretrained(dir);
            using var _ = no_grad();
            var added = io.ContainsKey("text_embeds") || io.ContainsKey("time_ids")
                ? new UNetAddedConditions(io.GetValueOrDefault("text_embeds"), io.GetValueOrDefault("time_ids"))
                : null;
            using var output = unet.forward(io["sample"], io["timestep"], io["encoder_hidden_states"], added);
            checks.Add(FixtureCheck.Compare("output", output, io["expected"], fixture.Atol, fixture.Rtol));
            if (fixture.Json["parameters"] is { } expected)
                checks.Add(ParameterCheck(PretrainedModel.ParameterCount(unet), expected.GetValue<long>()));
        }
        finally
        {
            foreach (var t in io.Values) t.Dispose();
        }
        return checks;
    }

    internal static FixtureCheck ParameterCheck(long actual, long expected) =>
        FixtureCheck.Exact("parameters", [actual], [expected], $"{actual:N0} vs expected {expected:N0}");
}

/// <summary>The SD1.5-topology UNet fixture.</summary>
public sealed class UnetSd15FixtureSuite() : UnetFixtureSuite("unet_sd15");

/// <summary>The SDXL-topology UNet fixture (text_time added conditioning).</summary>
public sealed class UnetSdxlFixtureSuite() : UnetFixtureSuite("unet_sdxl");
