using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Unets;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Verification;

/// <summary>Checks a kohya LoRA (lora_kohya/lora.safetensors) on the UNet of the sibling unet_sd15 folder: fused at
/// scale 1 and at the fixture's other scale, attached through hooks, and unfused back to the base weights.</summary>
public sealed class LoraFixtureSuite : IFixtureSuite
{
    public string Folder => "lora_kohya";

    public IEnumerable<FixtureCheck> Run(string dir)
    {
        var fixture = new FixtureFolder(dir);
        var unetDir = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(dir))!, "unet_sd15");
        var expected = fixture.Io();
        var inputs = new FixtureFolder(unetDir).Io();
        using var unet = UNet2DConditionModel.FromPretrained(unetDir);
        using var _ = no_grad();
        using var adapter = LoraFormats.Load(Path.Combine(dir, "lora.safetensors"), unet);
        var checks = new List<FixtureCheck>();

        if (fixture.Json["targets"] is { } targets)
            checks.Add(FixtureCheck.Exact("targets", [adapter.Layers.Count], [targets.GetValue<int>()], $"{adapter.Layers.Count} modules"));
        if (fixture.Json["rank"] is { } rank && fixture.Json["alpha"] is { } alpha)
            checks.Add(FixtureCheck.Exact("rank and alpha",
                adapter.Layers.Values.Select(l => (l.Rank, l.Alpha)).Distinct(),
                [(rank.GetValue<int>(), alpha.GetValue<double>())]));

        var baseWeights = unet.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        Tensor Run() => unet.forward(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"]);
        foreach (var key in expected.Keys.Where(k => k.StartsWith("expected_scale_", StringComparison.Ordinal)).Order())
        {
            double scale = double.Parse(key["expected_scale_".Length..], System.Globalization.CultureInfo.InvariantCulture);
            adapter.Fuse(unet, scale);
            checks.Add(FixtureCheck.Compare($"fused at scale {scale}", Run(), expected[key], fixture.Atol, fixture.Rtol));
            adapter.Unfuse(unet, scale);
            adapter.Weight = scale;
            adapter.Attach(unet);
            checks.Add(FixtureCheck.Compare($"attached at scale {scale}", Run(), expected[key], fixture.Atol, fixture.Rtol));
            adapter.Detach();
        }
        double worst = unet.state_dict().Max(kv => (kv.Value - baseWeights[kv.Key]).abs().max().item<float>());
        checks.Add(new FixtureCheck("unfuse restores the base", worst, "fp32 rounding (1e-5)", worst <= 1e-5));
        return checks;
    }
}
