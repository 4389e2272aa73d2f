using System.Text.Json.Nodes;
using HyperSd.Diffusion.Loaders.SingleFile;
using HyperSd.Diffusion.Verification;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Loaders;

public class SingleFileKeyMapTests(ITestOutputHelper output)
{
    static readonly SingleFileKeyMap Sd15 = SingleFileKeyMap.ForStableDiffusion15(
        4, 2, [true, true, true, false], [false, true, true, true], vaeLevels: 4, vaeLayersPerBlock: 2, textLayers: 12);

    [Fact]
    public void Layout_suite_passes() => Fixtures.AssertSuite<SingleFileLayoutSuite>(output);

    [Fact]
    public void Unknown_key_is_an_error_naming_key_and_file()
    {
        var checkpoint = new Dictionary<string, Tensor>
        {
            ["model.diffusion_model.conv_in.weight"] = zeros(1),
            ["model.diffusion_model.input_blocks.1.0.in_layers.0.weight"] = zeros(1),
            ["cond_stage_model.model.transformer.resblocks.0.ln_1.weight"] = zeros(1), // an SD2 (OpenCLIP) key
        };
        var e = Assert.Throws<InvalidDataException>(() => Sd15.Split(checkpoint, "/models/v1-5.safetensors"));
        Assert.Contains("/models/v1-5.safetensors", e.Message);
        Assert.Contains("'model.diffusion_model.conv_in.weight'", e.Message);
        Assert.Contains("'cond_stage_model.model.transformer.resblocks.0.ln_1.weight'", e.Message);
        Assert.DoesNotContain("in_layers", e.Message);
    }

    [Fact]
    public void Keys_beyond_the_configured_depth_are_unmapped()
    {
        Assert.NotNull(Sd15.Map("model.diffusion_model.input_blocks.11.0.in_layers.0.weight"));
        Assert.Null(Sd15.Map("model.diffusion_model.input_blocks.11.1.norm.weight")); // level 3 has no transformers
        Assert.Null(Sd15.Map("cond_stage_model.transformer.text_model.encoder.layers.12.mlp.fc1.weight"));
        Assert.Null(Sd15.Map("first_stage_model.encoder.down.3.downsample.conv.weight"));
        Assert.NotNull(Sd15.Map("first_stage_model.encoder.down.2.downsample.conv.weight"));
    }

    [Fact]
    public void Two_keys_onto_one_target_is_an_error()
    {
        var checkpoint = new Dictionary<string, Tensor>
        {
            ["cond_stage_model.transformer.final_layer_norm.weight"] = ones(4),
            ["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = ones(4),
        };
        var e = Assert.Throws<InvalidDataException>(() => Sd15.Split(checkpoint, "x.safetensors"));
        Assert.Contains("both map to TextEncoder 'text_model.final_layer_norm.weight'", e.Message);
    }

    [Theory]
    // a scaled-down UNet: 3 levels, 1 layer per block, transformers in down 0-1 and up 1-2
    [InlineData("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", Component.Unet, "down_blocks.0.resnets.0.conv1.weight")]
    [InlineData("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", Component.Unet, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight")]
    [InlineData("model.diffusion_model.input_blocks.2.0.op.bias", Component.Unet, "down_blocks.0.downsamplers.0.conv.bias")]
    [InlineData("model.diffusion_model.input_blocks.5.0.skip_connection.weight", Component.Unet, "down_blocks.2.resnets.0.conv_shortcut.weight")]
    [InlineData("model.diffusion_model.middle_block.2.emb_layers.1.weight", Component.Unet, "mid_block.resnets.1.time_emb_proj.weight")]
    [InlineData("model.diffusion_model.output_blocks.1.1.conv.weight", Component.Unet, "up_blocks.0.upsamplers.0.conv.weight")]
    [InlineData("model.diffusion_model.output_blocks.3.2.conv.weight", Component.Unet, "up_blocks.1.upsamplers.0.conv.weight")]
    [InlineData("model.diffusion_model.output_blocks.5.1.proj_out.weight", Component.Unet, "up_blocks.2.attentions.1.proj_out.weight")]
    [InlineData("model.diffusion_model.out.2.bias", Component.Unet, "conv_out.bias")]
    // a 3-level VAE with 1 layer per block: ldm decoder up.2 is diffusers' up_blocks.0
    [InlineData("first_stage_model.decoder.up.2.block.1.nin_shortcut.weight", Component.Vae, "decoder.up_blocks.0.resnets.1.conv_shortcut.weight")]
    [InlineData("first_stage_model.decoder.up.1.upsample.conv.weight", Component.Vae, "decoder.up_blocks.1.upsamplers.0.conv.weight")]
    [InlineData("first_stage_model.encoder.norm_out.bias", Component.Vae, "encoder.conv_norm_out.bias")]
    [InlineData("first_stage_model.encoder.mid.attn_1.norm.weight", Component.Vae, "encoder.mid_block.attentions.0.group_norm.weight")]
    [InlineData("cond_stage_model.transformer.encoder.layers.1.self_attn.out_proj.bias", Component.TextEncoder, "text_model.encoder.layers.1.self_attn.out_proj.bias")]
    [InlineData("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", Component.TextEncoder, "text_model.embeddings.token_embedding.weight")]
    public void Scaled_down_config_maps_by_its_own_numbers(string key, Component component, string diffusersKey)
    {
        var map = SingleFileKeyMap.ForStableDiffusion15(3, 1, [true, true, false], [false, true, true], 3, 1, 2);
        Assert.Equal(new SingleFileTarget(component, diffusersKey), map.Map(key));
    }

    [Fact]
    public void Full_size_checkpoint_splits_into_the_diffusers_layouts()
    {
        // Meta tensors carry SD1.5's shapes without memory; the extras of a real file are dropped.
        var meta = new Device(DeviceType.META);
        var checkpoint = ReadShapes("sd15_single_file.json").ToDictionary(kv => kv.Key, kv => empty(kv.Value, device: meta));
        foreach (var extra in new[] { "betas", "alphas_cumprod", "posterior_mean_coef2", "model_ema.decay",
                     "model_ema.diffusion_modelinput_blocks00weight", "cond_stage_model.transformer.text_model.embeddings.position_ids" })
            checkpoint[extra] = empty([1], device: meta);

        var parts = Sd15.Split(checkpoint, "sd15_single_file.json");

        foreach (var (component, file, prefix) in new[] { (Component.Unet, "sd15_unet.json", ""), (Component.Vae, "sd15_vae.json", ""),
                     (Component.TextEncoder, "sd15_text_encoder.json", "text_model.") })
        {
            var want = ReadShapes(file);
            Assert.Equal(want.Keys.Select(k => prefix + k).Order(), parts[component].Keys.Order());
            foreach (var (key, shape) in want)
                Assert.Equal(shape, parts[component][prefix + key].shape);
        }
    }

    [Fact]
    public void Split_squeezes_vae_attention_convs_and_keeps_values()
    {
        var map = SingleFileKeyMap.ForStableDiffusion15(2, 1, [true, false], [false, true], 2, 1, 1);
        var q = arange(12f).reshape(3, 4, 1, 1);
        var checkpoint = new Dictionary<string, Tensor>
        {
            ["first_stage_model.decoder.mid.attn_1.q.weight"] = q,
            ["first_stage_model.decoder.mid.attn_1.q.bias"] = arange(3f),
            ["first_stage_model.encoder.mid.attn_1.proj_out.weight"] = arange(16f).reshape(4, 4), // already Linear
            ["first_stage_model.encoder.down.0.block.0.conv1.weight"] = arange(54f).reshape(2, 3, 3, 3),
            ["model.diffusion_model.input_blocks.1.0.out_layers.3.weight"] = ones(2, 2, 3, 3),
            ["cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"] = ones(8, 4),
            ["sqrt_recipm1_alphas_cumprod"] = ones(1000),
        };
        var parts = map.Split(checkpoint, "tiny.safetensors");

        var toQ = parts[Component.Vae]["decoder.mid_block.attentions.0.to_q.weight"];
        Assert.Equal([3L, 4L], toQ.shape);
        Assert.True(toQ.eq(q[.., .., 0, 0]).all().item<bool>());
        Assert.Equal([3L], parts[Component.Vae]["decoder.mid_block.attentions.0.to_q.bias"].shape);
        Assert.Equal([4L, 4L], parts[Component.Vae]["encoder.mid_block.attentions.0.to_out.0.weight"].shape);
        Assert.Equal([2L, 3L, 3L, 3L], parts[Component.Vae]["encoder.down_blocks.0.resnets.0.conv1.weight"].shape);
        Assert.Equal(["down_blocks.0.resnets.0.conv2.weight"], parts[Component.Unet].Keys);
        Assert.Equal(["text_model.encoder.layers.0.mlp.fc1.weight"], parts[Component.TextEncoder].Keys);
    }

    [Fact]
    public void A_non_1x1_conv_on_a_linear_target_is_an_error_naming_the_key()
    {
        var checkpoint = new Dictionary<string, Tensor> { ["first_stage_model.encoder.mid.attn_1.k.weight"] = zeros(4, 4, 3, 3) };
        var e = Assert.Throws<InvalidDataException>(() => Sd15.Split(checkpoint, "odd.safetensors"));
        Assert.Contains("odd.safetensors", e.Message);
        Assert.Contains("'first_stage_model.encoder.mid.attn_1.k.weight'", e.Message);
        Assert.Contains("[4, 4, 3, 3]", e.Message);
    }

    [Fact]
    public void Map_reads_its_numbers_from_the_layout_configs()
    {
        JsonObject Config(string file) => JsonNode.Parse(File.ReadAllText(Fixtures.Path("layouts", file)))!["config"]!.AsObject();
        var map = SingleFileKeyMap.FromConfigs(Config("sd15_unet.json"), Config("sd15_vae.json"), Config("sd15_text_encoder.json"));
        foreach (var key in ReadShapes("sd15_single_file.json").Keys)
            Assert.Equal(Sd15.Map(key), map.Map(key));
    }

    static Dictionary<string, long[]> ReadShapes(string file) =>
        JsonNode.Parse(File.ReadAllText(Fixtures.Path("layouts", file)))!["tensors"]!.AsObject()
            .ToDictionary(kv => kv.Key, kv => kv.Value!.AsArray().Select(d => d!.GetValue<long>()).ToArray());
}
