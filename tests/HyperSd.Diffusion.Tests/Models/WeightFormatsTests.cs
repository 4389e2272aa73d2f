using System.Text.Json.Nodes;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models.Unets;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Models;

/// <summary>diffusers weight files as users have them: fp16/bf16 variants and sharded index files.</summary>
public class WeightFormatsTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("weights-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    Dictionary<string, Tensor> Weights() => SafeTensors.Load(Fixtures.Path("unet_sd15", "diffusion_pytorch_model.safetensors"));

    Tensor Output(UNet2DConditionModel unet)
    {
        var io = SafeTensors.Load(Fixtures.Path("unet_sd15", "io.safetensors"));
        using var _ = no_grad();
        var dtype = unet.parameters().First().dtype;
        return unet.forward(io["sample"].to(dtype), io["timestep"], io["encoder_hidden_states"].to(dtype)).to(float32);
    }

    [Theory]
    [InlineData("fp16", ScalarType.Float16)]
    [InlineData("bf16", ScalarType.BFloat16)]
    public void Half_precision_variants_load_into_an_fp32_model(string variant, ScalarType stored)
    {
        File.Copy(Fixtures.Path("unet_sd15", "config.json"), Path.Combine(dir, "config.json"));
        SafeTensors.Save(Path.Combine(dir, $"diffusion_pytorch_model.{variant}.safetensors"),
            Weights().ToDictionary(kv => kv.Key, kv => kv.Value.to(stored)));
        using var reference = UNet2DConditionModel.FromPretrained(Fixtures.Path("unet_sd15"));
        using var unet = UNet2DConditionModel.FromPretrained(dir, variant: variant);
        Assert.All(unet.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
        var rel = (Output(unet) - Output(reference)).abs().max().item<float>() / Output(reference).abs().max().item<float>();
        Assert.InRange(rel, 0, stored == ScalarType.Float16 ? 5e-3 : 5e-2);
    }

    [Fact]
    public void A_model_can_run_in_bfloat16()
    {
        using var reference = UNet2DConditionModel.FromPretrained(Fixtures.Path("unet_sd15"));
        using var unet = UNet2DConditionModel.FromPretrained(Fixtures.Path("unet_sd15"), dtype: ScalarType.BFloat16);
        Assert.All(unet.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        var expected = Output(reference);
        var rel = (Output(unet) - expected).abs().max().item<float>() / expected.abs().max().item<float>();
        Assert.InRange(rel, 0, 0.1);
    }

    [Fact]
    public void Sharded_weights_load_through_their_index()
    {
        File.Copy(Fixtures.Path("unet_sd15", "config.json"), Path.Combine(dir, "config.json"));
        var weights = Weights();
        var keys = weights.Keys.Order(StringComparer.Ordinal).ToList();
        var map = new JsonObject();
        for (int shard = 0; shard < 2; shard++)
        {
            var name = $"diffusion_pytorch_model-0000{shard + 1}-of-00002.safetensors";
            var part = keys.Where((_, i) => i % 2 == shard).ToDictionary(k => k, k => weights[k]);
            SafeTensors.Save(Path.Combine(dir, name), part);
            foreach (var k in part.Keys) map[k] = name;
        }
        File.WriteAllText(Path.Combine(dir, "diffusion_pytorch_model.safetensors.index.json"), new JsonObject { ["weight_map"] = map }.ToJsonString());
        using var reference = UNet2DConditionModel.FromPretrained(Fixtures.Path("unet_sd15"));
        using var unet = UNet2DConditionModel.FromPretrained(dir);
        Assert.True(Output(unet).eq(Output(reference)).all().item<bool>());
    }
}
