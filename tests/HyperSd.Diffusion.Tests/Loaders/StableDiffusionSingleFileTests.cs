using System.Text.Json.Nodes;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Loaders.SingleFile;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Diffusion.Verification;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Loaders;

/// <summary>Round trips the tiny SD1.5-topology fixture components through one single-file checkpoint.</summary>
public sealed class StableDiffusionSingleFileTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("hypersd-single-file-").FullName;
    readonly UNet2DConditionModel unet = UNet2DConditionModel.FromPretrained(Fixtures.Path("unet_sd15"));
    readonly AutoencoderKL vae = AutoencoderKL.FromPretrained(Fixtures.Path("vae_sd15"));
    readonly CLIPTextModel text = CLIPTextModel.FromPretrained(Fixtures.Path("text_sd15", "text_encoder"));

    /// <summary>The fixture components saved as one single-file checkpoint (written on first use).</summary>
    string Saved
    {
        get
        {
            var path = Path.Combine(dir, "tiny.safetensors");
            if (!File.Exists(path)) StableDiffusionSingleFile.Save(path, unet, vae, text);
            return path;
        }
    }

    SingleFileConfigs Configs => new(unet.Config, vae.Config, text.Config);

    [Fact]
    public void Round_trip_keeps_every_tensor_and_the_unet_output()
    {
        using var loaded = StableDiffusionSingleFile.Load(Saved, Configs);
        foreach (var (original, back) in new (nn.Module, nn.Module)[] { (unet, loaded.Unet), (vae, loaded.Vae), (text, loaded.TextEncoder) })
        {
            var want = original.state_dict();
            var got = back.state_dict();
            Assert.Equal(want.Keys.Order(), got.Keys.Order());
            foreach (var (key, tensor) in want)
                Assert.True(tensor.shape.SequenceEqual(got[key].shape) && tensor.eq(got[key]).all().item<bool>(), $"{original.GetType().Name} '{key}' differs");
        }

        var io = SafeTensors.Load(Fixtures.Path("unet_sd15", "io.safetensors"));
        using var _ = no_grad();
        using var result = loaded.Unet.forward(io["sample"], io["timestep"], io["encoder_hidden_states"]);
        var check = FixtureCheck.Compare("output", result, io["expected"], atol: 1e-4, rtol: 0);
        output.WriteLine(check.ToString());
        Assert.True(check.Passed, check.ToString());
    }

    [Fact]
    public void Saved_keys_are_in_the_original_layout()
    {
        var header = SafeTensors.ReadHeader(Saved);
        Assert.All(header.Keys, key => Assert.True(
            key.StartsWith("model.diffusion_model.") || key.StartsWith("first_stage_model.") || key.StartsWith("cond_stage_model.transformer."), key));
        // VAE attention back as 1×1 convs; the text tower under the released SD1.5 files' names.
        var c = vae.Config.BlockOutChannels[^1];
        Assert.Equal([c, c, 1L, 1L], header["first_stage_model.decoder.mid.attn_1.proj_out.weight"].Shape);
        Assert.Contains("cond_stage_model.transformer.encoder.layers.0.self_attn.q_proj.weight", header.Keys);
        Assert.Contains("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", header.Keys);
        int count = new nn.Module[] { unet, vae, text }.Sum(m => m.state_dict().Count);
        Assert.Equal(count, header.Count);
    }

    [Fact]
    public void A_ckpt_file_is_refused_as_pickle()
    {
        var ckpt = Path.Combine(dir, "model.ckpt");
        File.Copy(Saved, ckpt);
        var e = Assert.Throws<NotSupportedException>(() => StableDiffusionSingleFile.Load(ckpt, Configs));
        Assert.Contains("pickle", e.Message);
        Assert.Contains(ckpt, e.Message);
    }

    [Fact]
    public void A_wrong_shape_names_key_file_and_both_shapes()
    {
        var bad = Rewrite("bad_shape.safetensors", t => t["model.diffusion_model.out.2.bias"] = zeros(5));
        var e = Assert.Throws<WeightLoadException>(() => StableDiffusionSingleFile.Load(bad, Configs));
        output.WriteLine(e.Message);
        Assert.Contains("'conv_out.bias'", e.Message);
        Assert.Contains("'model.diffusion_model.out.2.bias'", e.Message);
        Assert.Contains(bad, e.Message);
        Assert.Contains("[5]", e.Message);
        Assert.Contains($"[{unet.Config.OutChannels}]", e.Message);
    }

    [Fact]
    public void An_unknown_key_is_named()
    {
        var bad = Rewrite("unknown_key.safetensors", t => t["model.diffusion_model.extra_head.weight"] = zeros(2));
        var e = Assert.Throws<InvalidDataException>(() => StableDiffusionSingleFile.Load(bad, Configs));
        output.WriteLine(e.Message);
        Assert.Contains("'model.diffusion_model.extra_head.weight'", e.Message);
        Assert.Contains(bad, e.Message);
    }

    [Fact]
    public void Save_refuses_a_non_safetensors_path()
    {
        var e = Assert.Throws<ArgumentException>(() => StableDiffusionSingleFile.Save(Path.Combine(dir, "out.ckpt"), unet, vae, text));
        Assert.Contains("out.ckpt", e.Message);
    }

    [Fact]
    public void Default_configs_build_the_sd15_layouts()
    {
        // Meta-device models have SD1.5's full shapes without memory; compare them with the reference layouts.
        var meta = new Device(DeviceType.META);
        var sd15 = SingleFileConfigs.StableDiffusion15;
        using var fullUnet = new UNet2DConditionModel(sd15.Unet, meta);
        using var fullVae = new AutoencoderKL(sd15.Vae, meta);
        using var fullText = new CLIPTextModel(sd15.TextEncoder, meta);
        foreach (var (model, file, prefix) in new (nn.Module, string, string)[]
                 { (fullUnet, "sd15_unet.json", ""), (fullVae, "sd15_vae.json", ""), (fullText, "sd15_text_encoder.json", "text_model.") })
        {
            var want = Layout(file)["tensors"]!.AsObject()
                .ToDictionary(kv => prefix + kv.Key, kv => kv.Value!.AsArray().Select(d => d!.GetValue<long>()).ToArray());
            var got = model.state_dict();
            Assert.Equal(want.Keys.Order(), got.Keys.Order());
            foreach (var (key, shape) in want) Assert.Equal(shape, got[key].shape);
        }
        var layoutMap = SingleFileKeyMap.FromConfigs(Config("sd15_unet.json"), Config("sd15_vae.json"), Config("sd15_text_encoder.json"));
        var map = sd15.KeyMap();
        foreach (var key in Layout("sd15_single_file.json")["tensors"]!.AsObject().Select(kv => kv.Key))
            Assert.Equal(layoutMap.Map(key), map.Map(key));
        Assert.Equal(0.18215, sd15.Vae.ScalingFactor);
        Assert.Equal(49407, sd15.TextEncoder.EosTokenId);
    }

    [Fact]
    public void Unmap_inverts_map_on_the_full_sd15_layout()
    {
        var map = SingleFileConfigs.StableDiffusion15.KeyMap();
        foreach (var key in Layout("sd15_single_file.json")["tensors"]!.AsObject().Select(kv => kv.Key).Where(k => !SingleFileKeyMap.IsIgnored(k)))
        {
            var target = map.Map(key)!;
            Assert.Equal(key, map.Unmap(target.Component, target.DiffusersKey));
        }
        // Both text-encoder layouts load; exports use the released files' one.
        Assert.Equal("cond_stage_model.transformer.final_layer_norm.weight",
            map.Unmap(Component.TextEncoder, map.Map("cond_stage_model.transformer.text_model.final_layer_norm.weight")!.DiffusersKey));
        Assert.Null(map.Unmap(Component.Unet, "no_such_module.weight"));
    }

    string Rewrite(string name, Action<Dictionary<string, Tensor>> edit)
    {
        var tensors = SafeTensors.Load(Saved);
        edit(tensors);
        var path = Path.Combine(dir, name);
        SafeTensors.Save(path, tensors);
        foreach (var t in tensors.Values) t.Dispose();
        return path;
    }

    static JsonObject Layout(string file) => JsonNode.Parse(File.ReadAllText(Fixtures.Path("layouts", file)))!.AsObject();

    static JsonObject Config(string file) => Layout(file)["config"]!.AsObject();

    public void Dispose()
    {
        unet.Dispose();
        vae.Dispose();
        text.Dispose();
        Directory.Delete(dir, recursive: true);
    }
}
