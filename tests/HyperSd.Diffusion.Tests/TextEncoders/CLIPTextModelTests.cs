using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.TextEncoders;

public class CLIPTextModelTests : IDisposable
{
    static readonly string EncoderDir = Fixtures.Path("text_sd15", "text_encoder");
    readonly string dir = Directory.CreateTempSubdirectory("clip-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    static Tensor Ids(CLIPTextConfig config) => tensor(new long[] { config.BosTokenId, 5, 9, config.EosTokenId, config.EosTokenId, 3 }).view(1, 6);

    [Fact]
    public void Save_then_load_gives_identical_weights_and_outputs()
    {
        using var model = CLIPTextModel.FromPretrained(EncoderDir);
        model.SavePretrained(dir);
        using var loaded = CLIPTextModel.FromPretrained(dir);
        Assert.Equal(model.Config with { Architectures = null }, loaded.Config with { Architectures = null });
        var expected = model.state_dict();
        foreach (var (key, value) in loaded.state_dict())
            Assert.True(value.eq(expected[key]).all().item<bool>(), key);
        using var _ = no_grad();
        using var ids = Ids(model.Config);
        using var a = model.forward(ids);
        using var b = loaded.forward(ids);
        Assert.True(a.LastHiddenState.eq(b.LastHiddenState).all().item<bool>());
    }

    [Fact]
    public void Keys_with_text_model_prefix_and_legacy_position_ids_load()
    {
        using var model = CLIPTextModel.FromPretrained(EncoderDir);
        File.Copy(Path.Combine(EncoderDir, "config.json"), Path.Combine(dir, "config.json"));
        var tensors = StateDict.Of(model);
        Assert.All(tensors.Keys, k => Assert.StartsWith("text_model.", k));
        tensors["text_model.embeddings.position_ids"] = arange(model.Config.MaxPositionEmbeddings).unsqueeze(0);
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), tensors);
        using var loaded = CLIPTextModel.FromPretrained(dir);
        Assert.True(loaded.state_dict()["text_model.final_layer_norm.weight"].eq(tensors["text_model.final_layer_norm.weight"]).all().item<bool>());
    }

    [Fact]
    public void Pooled_output_is_at_the_first_eos_or_at_the_largest_id_for_legacy_configs()
    {
        var config = ModelConfig.Read<CLIPTextConfig>(Path.Combine(EncoderDir, "config.json"));
        using var _ = no_grad();
        using var ids = Ids(config);
        using var model = new CLIPTextModel(config);
        using (var output = model.forward(ids))
            Assert.True(output.PoolerOutput.eq(output.LastHiddenState[0, 3].unsqueeze(0)).all().item<bool>());

        using var legacy = new CLIPTextModel(config with { EosTokenId = 2 });
        using var legacyOutput = legacy.forward(ids);
        long largest = ids.argmax(-1).item<long>();
        Assert.True(legacyOutput.PoolerOutput.eq(legacyOutput.LastHiddenState[0, largest].unsqueeze(0)).all().item<bool>());
    }

    [Fact]
    public void Hidden_states_hold_embeddings_and_every_layer()
    {
        var config = ModelConfig.Read<CLIPTextConfig>(Path.Combine(EncoderDir, "config.json"));
        using var _ = no_grad();
        using var ids = Ids(config);
        using var model = new CLIPTextModel(config);
        using var output = model.forward(ids);
        Assert.Equal(config.NumHiddenLayers + 1, output.HiddenStates.Count);
        Assert.Same(output.HiddenStates[^2], output.PenultimateHiddenState);
    }

    [Fact]
    public void Projection_model_projects_the_pooled_output_and_round_trips()
    {
        var config = ModelConfig.Read<CLIPTextConfig>(Path.Combine(EncoderDir, "config.json")) with { ProjectionDim = 24, HiddenAct = "gelu" };
        using var model = new CLIPTextModelWithProjection(config);
        model.SavePretrained(dir);
        Assert.Contains("text_projection.weight", SafeTensors.ReadHeader(Path.Combine(dir, "model.safetensors")).Keys);
        using var loaded = CLIPTextModelWithProjection.FromPretrained(dir);
        using var _ = no_grad();
        using var ids = Ids(config);
        using var output = loaded.forward(ids);
        var weight = loaded.state_dict()["text_projection.weight"];
        Assert.Equal([1L, 24L], output.TextEmbeds!.shape);
        Assert.True(output.TextEmbeds.allclose(output.PoolerOutput.matmul(weight.t())));
        using var original = model.forward(ids);
        Assert.True(original.TextEmbeds!.eq(output.TextEmbeds).all().item<bool>());
    }

    [Fact]
    public void Unsupported_activation_is_named()
    {
        File.WriteAllText(Path.Combine(dir, "config.json"), """{"hidden_size": 8, "num_attention_heads": 2, "hidden_act": "swish"}""");
        var e = Assert.Throws<InvalidDataException>(() => CLIPTextModel.FromPretrained(dir));
        Assert.Contains("swish", e.Message);
        Assert.Contains("config.json", e.Message);
    }
}
