using System.Text.Json.Nodes;
using HyperSd.Diffusion.Clip;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Clip;

public class CLIPVisionModelTests : IDisposable
{
    /// <summary>8×8 images in 4×4 patches: 4 patches + the class token.</summary>
    static readonly CLIPVisionConfig Tiny = new()
    {
        HiddenSize = 16, IntermediateSize = 24, ProjectionDim = 12, NumHiddenLayers = 2, NumAttentionHeads = 2,
        ImageSize = 8, PatchSize = 4,
    };

    readonly string dir = Directory.CreateTempSubdirectory("clip-vision-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    /// <summary>Every tensor drawn at random (norms and biases too) so that no layer is trivially the identity.</summary>
    internal static void Randomize(nn.Module model, long seed)
    {
        var generator = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (_, p) in model.named_parameters()) p.normal_(0, 0.4, generator);
    }

    static CLIPVisionModelWithProjection RandomModel(CLIPVisionConfig config, long seed = 1)
    {
        var model = new CLIPVisionModelWithProjection(config);
        Randomize(model, seed);
        model.eval();
        return model;
    }

    static Tensor Pixels(long batch = 2, int size = 8) => randn([batch, 3, size, size], generator: new Generator(7));

    static Tensor LayerNorm(Tensor x, Tensor weight, Tensor bias, double eps)
    {
        var mean = x.mean([-1], keepdim: true);
        var variance = (x - mean).pow(2).mean([-1], keepdim: true);
        return (x - mean) / (variance + eps).sqrt() * weight + bias;
    }

    [Fact]
    public void State_dict_has_the_transformers_key_layout()
    {
        using var model = new CLIPVisionModelWithProjection(Tiny with { NumHiddenLayers = 1 });
        var shapes = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        var layer = new[]
            {
                "self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj", "layer_norm1", "mlp.fc1", "mlp.fc2",
                "layer_norm2",
            }
            .SelectMany(m => new[] { $"vision_model.encoder.layers.0.{m}.weight", $"vision_model.encoder.layers.0.{m}.bias" });
        string[] expected =
        [
            "vision_model.embeddings.class_embedding", "vision_model.embeddings.patch_embedding.weight",
            "vision_model.embeddings.position_embedding.weight", "vision_model.pre_layrnorm.weight", "vision_model.pre_layrnorm.bias",
            .. layer, "vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias", "visual_projection.weight",
        ];
        Assert.Equal(expected.Order(StringComparer.Ordinal), shapes.Keys.Order(StringComparer.Ordinal));
        Assert.Equal([16L], shapes["vision_model.embeddings.class_embedding"]);
        Assert.Equal([16L, 3, 4, 4], shapes["vision_model.embeddings.patch_embedding.weight"]);
        Assert.Equal([5L, 16], shapes["vision_model.embeddings.position_embedding.weight"]);
        Assert.Equal([12L, 16], shapes["visual_projection.weight"]);
    }

    [Fact]
    public void Save_then_load_gives_identical_weights_and_outputs()
    {
        using var model = RandomModel(Tiny);
        model.SavePretrained(dir);
        using var loaded = CLIPVisionModelWithProjection.FromPretrained(dir);
        Assert.Equal(model.Config with { Architectures = null }, loaded.Config with { Architectures = null });
        var expected = model.state_dict();
        foreach (var (key, value) in loaded.state_dict())
            Assert.True(value.eq(expected[key]).all().item<bool>(), key);
        using var _ = no_grad();
        using var pixels = Pixels();
        using var a = model.forward(pixels);
        using var b = loaded.forward(pixels);
        Assert.True(a.ImageEmbeds!.eq(b.ImageEmbeds!).all().item<bool>());

        // CLIPVisionModel reads the same folder (the projection is an unexpected key for it).
        var e = Assert.Throws<WeightLoadException>(() => CLIPVisionModel.FromPretrained(dir));
        Assert.Contains("unexpected key 'visual_projection.weight'", e.Message);
    }

    /// <summary>The whole forward by hand: the patch convolution as a matmul over flattened patches, class token and
    /// positions, pre_layrnorm, then each encoder layer with unmasked softmax attention and the configured activation,
    /// post_layernorm of the class token and the projection.</summary>
    [Theory]
    [InlineData("quick_gelu")]
    [InlineData("gelu")]
    public void Forward_matches_a_hand_computation(string activation)
    {
        var config = Tiny with { HiddenAct = activation };
        using var model = RandomModel(config, seed: 3);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var w = model.state_dict();
        var pixels = Pixels();
        var output = model.forward(pixels);
        long batch = 2, width = 16, heads = 2, headDim = 8;
        double eps = config.LayerNormEps;

        // patches in row-major order, each flattened as (channel, row, column) like the conv weight
        var patches = pixels.view(batch, 3, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(batch, 4, 48);
        var patchEmbeds = patches.matmul(w["vision_model.embeddings.patch_embedding.weight"].view(width, 48).t());
        var classToken = w["vision_model.embeddings.class_embedding"].view(1, 1, width).expand(batch, 1, width);
        var tokens = cat([classToken, patchEmbeds], 1) + w["vision_model.embeddings.position_embedding.weight"];
        var hidden = LayerNorm(tokens, w["vision_model.pre_layrnorm.weight"], w["vision_model.pre_layrnorm.bias"], eps);
        AssertClose(hidden, output.HiddenStates[0], "embeddings + pre_layrnorm");

        Func<Tensor, Tensor> act = activation == "gelu"
            ? x => 0.5 * x * (1 + special.erf(x / Math.Sqrt(2)))
            : x => x * (1.702 * x).sigmoid();
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            string p = $"vision_model.encoder.layers.{l}.";
            Tensor Linear(Tensor x, string name) => x.matmul(w[p + name + ".weight"].t()) + w[p + name + ".bias"];
            Tensor Heads(Tensor x) => x.view(batch, 5, heads, headDim).transpose(1, 2);
            var normed = LayerNorm(hidden, w[p + "layer_norm1.weight"], w[p + "layer_norm1.bias"], eps);
            var q = Heads(Linear(normed, "self_attn.q_proj"));
            var k = Heads(Linear(normed, "self_attn.k_proj"));
            var v = Heads(Linear(normed, "self_attn.v_proj"));
            var weights = (q.matmul(k.transpose(-1, -2)) / Math.Sqrt(headDim)).softmax(-1); // no mask: every token sees all
            var attended = weights.matmul(v).transpose(1, 2).reshape(batch, 5, width);
            hidden = hidden + Linear(attended, "self_attn.out_proj");
            var normed2 = LayerNorm(hidden, w[p + "layer_norm2.weight"], w[p + "layer_norm2.bias"], eps);
            hidden = hidden + Linear(act(Linear(normed2, "mlp.fc1")), "mlp.fc2");
            AssertClose(hidden, output.HiddenStates[l + 1], $"layer {l}");
        }
        AssertClose(hidden, output.LastHiddenState, "last_hidden_state");
        var pooled = LayerNorm(hidden[.., 0], w["vision_model.post_layernorm.weight"], w["vision_model.post_layernorm.bias"], eps);
        AssertClose(pooled, output.PoolerOutput, "pooler_output");
        AssertClose(pooled.matmul(w["visual_projection.weight"].t()), output.ImageEmbeds!, "image_embeds");
    }

    [Fact]
    public void Vision_and_text_towers_load_from_a_full_CLIPModel_folder()
    {
        var textConfig = new CLIPTextConfig
        {
            VocabSize = 40, HiddenSize = 8, IntermediateSize = 16, ProjectionDim = 12, NumHiddenLayers = 1, NumAttentionHeads = 2,
            MaxPositionEmbeddings = 10, BosTokenId = 38, EosTokenId = 39,
        };
        using var text = new CLIPTextModelWithProjection(textConfig);
        using var vision = RandomModel(Tiny);
        Randomize(text, 5);
        // A full CLIPConfig: the sections nest, the top-level projection_dim is what CLIPModel's projections use.
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("CLIPModel"), ["model_type"] = "clip", ["projection_dim"] = 12,
            ["logit_scale_init_value"] = 2.6592,
            ["text_config"] = JsonSerializerNode(textConfig with { ProjectionDim = 512 }),
            ["vision_config"] = JsonSerializerNode(Tiny with { ProjectionDim = 512, HiddenSize = 99 }),
            // old checkpoints carry *_config_dict entries, which override the sections
            ["vision_config_dict"] = new JsonObject { ["hidden_size"] = 16 },
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var tensors = StateDict.Of(text).Concat(StateDict.Of(vision)).ToDictionary();
        tensors["logit_scale"] = tensor(4.6052f);
        tensors["vision_model.embeddings.position_ids"] = arange(5).unsqueeze(0);
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), tensors);

        using var loadedVision = CLIPVisionModelWithProjection.FromPretrained(dir);
        using var loadedText = CLIPTextModelWithProjection.FromPretrained(dir);
        Assert.Equal(Tiny, loadedVision.Config with { Architectures = null });
        Assert.Equal(12, loadedText.Config.ProjectionDim);
        Assert.Equal(4.6052, CLIPPretrained.ReadLogitScale(dir), 5);
        using var _ = no_grad();
        using var pixels = Pixels();
        using (var a = vision.forward(pixels))
        using (var b = loadedVision.forward(pixels))
            Assert.True(a.ImageEmbeds!.eq(b.ImageEmbeds!).all().item<bool>());
        using var ids = tensor(new long[] { 38, 3, 4, 39, 39 }).view(1, 5);
        using var textA = text.forward(ids);
        using var textB = loadedText.forward(ids);
        Assert.True(textA.TextEmbeds!.eq(textB.TextEmbeds!).all().item<bool>());
    }

    static JsonNode JsonSerializerNode<T>(T config) => System.Text.Json.JsonSerializer.SerializeToNode(config, ModelConfig.Json)!;

    [Fact]
    public void Missing_and_misshapen_keys_are_named_with_file_and_shapes()
    {
        using (var model = RandomModel(Tiny)) model.SavePretrained(dir);
        var weights = Path.Combine(dir, "model.safetensors");
        var tensors = SafeTensors.Load(weights);
        tensors.Remove("vision_model.post_layernorm.weight");
        tensors["vision_model.embeddings.position_embedding.weight"] = zeros(6, 16);
        SafeTensors.Save(weights, tensors);

        var e = Assert.Throws<WeightLoadException>(() => CLIPVisionModelWithProjection.FromPretrained(dir));
        Assert.Contains($"missing key 'vision_model.post_layernorm.weight' (expected shape [16]) in {weights}", e.Message);
        Assert.Contains(
            $"key 'vision_model.embeddings.position_embedding.weight' in {weights} has shape [6, 16], the model expects [5, 16]",
            e.Message);


    }

    [Fact]
    public void Wrong_image_size_unsupported_activation_and_missing_vision_config_are_named()
    {
        using var model = RandomModel(Tiny);
        using var pixels = Pixels(1, 9);
        var size = Assert.Throws<ArgumentException>(() => model.forward(pixels));
        Assert.Contains("[1, 3, 9, 9]", size.Message);
        Assert.Contains("image_size 8", size.Message);

        File.WriteAllText(Path.Combine(dir, "config.json"), """{"hidden_size": 8, "num_attention_heads": 2, "hidden_act": "swish"}""");
        var act = Assert.Throws<InvalidDataException>(() => CLIPVisionModel.FromPretrained(dir));
        Assert.Contains("swish", act.Message);
        Assert.Contains("config.json", act.Message);

        File.WriteAllText(Path.Combine(dir, "config.json"), """{"model_type": "clip", "text_config": {"hidden_size": 8}}""");
        var section = Assert.Throws<InvalidDataException>(() => CLIPVisionModel.FromPretrained(dir));
        Assert.Contains("no 'vision_config'", section.Message);
    }

    static void AssertClose(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double error = (expected - actual).abs().max().item<float>();
        Assert.True(error < 1e-4, $"{what}: max error {error}");
    }
}
