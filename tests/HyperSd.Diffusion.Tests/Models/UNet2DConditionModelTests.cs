using System.Text.Json;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Verification;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Models;

public class UNet2DConditionModelTests(ITestOutputHelper output)
{
    [Fact]
    public void SD15_topology_matches_diffusers() => Fixtures.AssertSuite<UnetSd15FixtureSuite>(output);

    [Fact]
    public void SDXL_topology_matches_diffusers() => Fixtures.AssertSuite<UnetSdxlFixtureSuite>(output);

    static (UNet2DConditionModel Unet, Dictionary<string, Tensor> Io) LoadSdxl() =>
        (UNet2DConditionModel.FromPretrained(Fixtures.Path("unet_sdxl")), SafeTensors.Load(Fixtures.Path("unet_sdxl", "io.safetensors")));

    static UNetAddedConditions Added(Dictionary<string, Tensor> io) => new(io["text_embeds"], io["time_ids"]);

    [Fact]
    public void Save_then_load_gives_identical_tensors()
    {
        using var unet = UNet2DConditionModel.FromPretrained(Fixtures.Path("unet_sdxl"));
        var dir = Directory.CreateTempSubdirectory("hypersd-unet-").FullName;
        try
        {
            unet.SavePretrained(dir);
            using var reloaded = UNet2DConditionModel.FromPretrained(dir);
            Assert.Equal(JsonSerializer.Serialize(unet.Config, ModelConfig.Json), JsonSerializer.Serialize(reloaded.Config, ModelConfig.Json));
            var expected = unet.state_dict();
            var actual = reloaded.state_dict();
            Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
            foreach (var (key, tensor) in expected)
                Assert.True(tensor.eq(actual[key]).all().item<bool>(), key);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Weight_with_a_wrong_shape_names_the_key_the_file_and_both_shapes()
    {
        using var folder = new TempModelFolder("unet_sdxl");
        folder.EditWeights(t => t["conv_in.weight"] = zeros(16, 4, 1, 1));
        var e = Assert.Throws<WeightLoadException>(() => UNet2DConditionModel.FromPretrained(folder.Dir));
        Assert.Contains("'conv_in.weight'", e.Message);
        Assert.Contains(folder.Weights, e.Message);
        Assert.Contains("[16, 4, 1, 1]", e.Message);
        Assert.Contains("[16, 4, 3, 3]", e.Message);
    }

    [Fact]
    public void Unknown_and_missing_keys_are_named_with_the_file()
    {
        using var folder = new TempModelFolder("unet_sdxl");
        folder.EditWeights(t =>
        {
            t["mid_block.extra.weight"] = zeros(3);
            t.Remove("conv_out.bias");
        });
        var e = Assert.Throws<WeightLoadException>(() => UNet2DConditionModel.FromPretrained(folder.Dir));
        Assert.Contains("unexpected key 'mid_block.extra.weight'", e.Message);
        Assert.Contains("missing key 'conv_out.bias' (expected shape [4])", e.Message);
        Assert.Contains(folder.Weights, e.Message);
    }

    [Fact]
    public void Missing_weights_file_names_the_folder_and_the_expected_file()
    {
        using var folder = new TempModelFolder("unet_sdxl");
        File.Delete(folder.Weights);
        var e = Assert.Throws<FileNotFoundException>(() => UNet2DConditionModel.FromPretrained(folder.Dir));
        Assert.Contains(folder.Dir, e.Message);
        Assert.Contains("diffusion_pytorch_model.safetensors", e.Message);
    }

    [Fact]
    public void Unknown_block_type_names_the_config_field_the_value_and_the_allowed_values()
    {
        using var folder = new TempModelFolder("unet_sdxl");
        folder.EditConfig(c => c["down_block_types"]![1] = "SimpleCrossAttnDownBlock2D");
        var e = Assert.Throws<InvalidDataException>(() => UNet2DConditionModel.FromPretrained(folder.Dir));
        Assert.Contains(folder.Config, e.Message);
        Assert.Contains("down_block_types[1]", e.Message);
        Assert.Contains("'SimpleCrossAttnDownBlock2D'", e.Message);
        Assert.Contains("CrossAttnDownBlock2D, DownBlock2D", e.Message);
    }

    [Fact]
    public void Unsupported_config_values_name_the_field()
    {
        var config = new UNet2DConditionConfig { ClassEmbedType = "timestep" };
        var e = Assert.Throws<ArgumentException>(() => new UNet2DConditionModel(config, new Device(DeviceType.META)));
        Assert.Contains("class_embed_type", e.Message);
        var mismatched = new UNet2DConditionConfig { AttentionHeadDim = new IntOrList([8, 8]) };
        e = Assert.Throws<ArgumentException>(() => new UNet2DConditionModel(mismatched, new Device(DeviceType.META)));
        Assert.Contains("attention_head_dim", e.Message);
    }

    [Fact]
    public void SDXL_without_time_ids_fails_clearly()
    {
        var (unet, io) = LoadSdxl();
        using var _ = unet;
        var e = Assert.Throws<ArgumentException>(() =>
            unet.forward(io["sample"], io["timestep"], io["encoder_hidden_states"], new UNetAddedConditions(io["text_embeds"], null)));
        Assert.Contains("time_ids", e.Message);
        e = Assert.Throws<ArgumentException>(() => unet.forward(io["sample"], io["timestep"], io["encoder_hidden_states"]));
        Assert.Contains("text_embeds", e.Message);
        e = Assert.Throws<ArgumentException>(() => unet.forward(io["sample"], io["timestep"], io["encoder_hidden_states"],
            new UNetAddedConditions(io["text_embeds"], io["time_ids"][.., ..4])));
        Assert.Contains("projection_class_embeddings_input_dim", e.Message);
    }

    [Fact]
    public void Features_are_the_down_mid_and_up_block_outputs_and_do_not_change_the_output()
    {
        var (unet, io) = LoadSdxl();
        using var _ = unet;
        using var noGrad = no_grad();
        using var plain = unet.forward(io["sample"], io["timestep"], io["encoder_hidden_states"], Added(io));
        using var features = new UNetFeatures();
        using var withFeatures = unet.forward(io["sample"], io["timestep"], io["encoder_hidden_states"], Added(io), features);
        Assert.True(plain.eq(withFeatures).all().item<bool>());
        var channels = unet.Config.BlockOutChannels;
        Assert.Equal(channels.Length, features.Down.Count);
        Assert.Equal(channels.Length, features.Up.Count);
        Assert.Equal([2, channels[0], 4, 4], features.Down[0].shape); // after the first downsampler
        Assert.Equal([2, channels[^1], 2, 2], features.Mid!.shape);
        Assert.Equal([2, channels[0], 8, 8], features.Up[^1].shape);
        Assert.All(features.All, t => Assert.False(t.IsInvalid));
    }

    [Fact]
    public void A_scalar_timestep_is_broadcast_to_the_batch()
    {
        var (unet, io) = LoadSdxl();
        using var _ = unet;
        using var noGrad = no_grad();
        var sample = io["sample"];
        var t = tensor(500L);
        using var scalar = unet.forward(sample, t, io["encoder_hidden_states"], Added(io));
        using var perSample = unet.forward(sample, full(2, 500L), io["encoder_hidden_states"], Added(io));
        Assert.True(scalar.allclose(perSample));
        Assert.Throws<ArgumentException>(() => unet.forward(sample, full(3, 500L), io["encoder_hidden_states"], Added(io)));
    }

    [Fact]
    public void Sizes_that_are_not_a_multiple_of_the_downsampling_factor_keep_their_size()
    {
        var (unet, io) = LoadSdxl();
        using var _ = unet;
        using var noGrad = no_grad();
        using var sample = randn(2, 4, 10, 6);
        using var result = unet.forward(sample, io["timestep"], io["encoder_hidden_states"], Added(io));
        Assert.Equal([2, 4, 10, 6], result.shape);
    }

    [Fact]
    public void Gradients_flow_to_every_parameter_in_training_mode()
    {
        var (unet, io) = LoadSdxl();
        using var _ = unet;
        unet.train();
        using var result = unet.forward(io["sample"], io["timestep"], io["encoder_hidden_states"], Added(io));
        using var loss = result.square().mean();
        loss.backward();
        Assert.All(unet.named_parameters(), p => Assert.True(p.parameter.grad is not null, p.name));
    }
}
