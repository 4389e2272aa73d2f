using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Lora;

public class LoraAdapterTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("lora-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    /// <summary>A model with a conv and an attention-like linear at nested paths, calling submodules with hooks.</summary>
    sealed class Block : nn.Module<Tensor, Tensor>
    {
        public readonly Conv2d conv1 = nn.Conv2d(3, 6, 3, padding: 1);
        public readonly Linear to_q = nn.Linear(6, 6);
        public readonly Linear other = nn.Linear(6, 6);
        public Block() : base(nameof(Block)) => RegisterComponents();
        public override Tensor forward(Tensor x)
        {
            var h = conv1.call(x);                                 // [B, 6, H, W]
            var t = h.flatten(2).transpose(1, 2);                  // [B, HW, 6]
            return other.call(to_q.call(t));
        }
    }

    sealed class Net : nn.Module<Tensor, Tensor>
    {
        public readonly ModuleList<Block> down_blocks = new(new Block(), new Block());
        public Net() : base(nameof(Net)) => RegisterComponents();
        public override Tensor forward(Tensor x) => down_blocks[0].call(x) + down_blocks[1].call(x);
    }

    static LoraAdapter Randomised(Net net, int rank = 2, double alpha = 1)
    {
        var adapter = LoraAdapter.Create(net, new LoraConfig(rank, alpha));
        using var _ = no_grad();
        foreach (var layer in adapter.Layers.Values) layer.UpWeight.normal_(0, 0.5);
        return adapter;
    }

    [Fact]
    public void Targets_follow_the_patterns_and_a_new_adapter_changes_nothing()
    {
        manual_seed(1);
        var net = new Net();
        var adapter = LoraAdapter.Create(net, new LoraConfig(4, 4));
        Assert.Equal(["down_blocks.0.conv1", "down_blocks.0.to_q", "down_blocks.1.conv1", "down_blocks.1.to_q"], adapter.Layers.Keys.Order());
        var x = randn(2, 3, 4, 4);
        var before = net.call(x);
        adapter.Attach(net);
        Assert.True(before.allclose(net.call(x)));
    }

    [Fact]
    public void Attached_equals_fused_and_unfuse_restores_the_base()
    {
        manual_seed(2);
        var net = new Net();
        var baseWeights = net.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var adapter = Randomised(net);
        var x = randn(2, 3, 4, 4);
        var plain = net.call(x);
        adapter.Weight = 0.7;
        adapter.Attach(net);
        var attached = net.call(x);
        adapter.Detach();
        Assert.False(plain.allclose(attached, atol: 1e-3));
        adapter.Fuse(net, 0.7);
        Assert.True(attached.allclose(net.call(x), rtol: 1e-5, atol: 1e-5));
        adapter.Unfuse(net, 0.7);
        foreach (var (k, v) in net.state_dict())
            Assert.True(v.allclose(baseWeights[k], rtol: 0, atol: 1e-6), k);
    }

    [Fact]
    public void Two_adapters_with_weights_add_up()
    {
        manual_seed(3);
        var net = new Net();
        var a = Randomised(net);
        var b = Randomised(net);
        var x = randn(1, 3, 4, 4);
        a.Weight = 0.5; b.Weight = 2;
        a.Attach(net); b.Attach(net);
        var both = net.call(x);
        a.Detach(); b.Detach();
        a.Fuse(net, 0.5); b.Fuse(net, 2);
        Assert.True(both.allclose(net.call(x), rtol: 1e-5, atol: 1e-5));
    }

    /// <summary>fp32 LoRA weights (master weights) on a bf16 base: the output stays bf16, the LoRA's gradients are fp32,
    /// and the result is the fp32 model's within bf16's precision.</summary>
    [Fact]
    public void Fp32_lora_on_a_bf16_base_trains_in_fp32()
    {
        manual_seed(5);
        var net = new Net();
        var adapter = Randomised(net);
        var x = randn(2, 3, 4, 4);
        adapter.Attach(net);
        var reference = net.call(x);
        net.to(bfloat16);
        var y = net.call(x.to(bfloat16));
        Assert.Equal(bfloat16, y.dtype);
        Assert.True(y.to(float32).allclose(reference, rtol: 0.05, atol: 0.05), "bf16 base with fp32 LoRA strays from fp32");
        y.to(float32).sum().backward();
        Assert.All(adapter.parameters(), p => Assert.Equal(float32, p.grad!.dtype));
    }

    [Fact]
    public void Only_lora_parameters_train_after_freezing_the_base()
    {
        var net = new Net();
        var adapter = LoraAdapter.Create(net, new LoraConfig(2, 2));
        LoraAdapter.FreezeBase(net);
        Assert.All(net.parameters(), p => Assert.False(p.requires_grad));
        Assert.All(adapter.parameters(), p => Assert.True(p.requires_grad));
        Assert.Equal(4 * 2, adapter.parameters().Count());
    }

    [Theory]
    [InlineData(LoraFileFormat.Kohya)]
    [InlineData(LoraFileFormat.Peft)]
    public void Save_then_load_gives_identical_tensors(LoraFileFormat format)
    {
        manual_seed(4);
        var net = new Net();
        var adapter = Randomised(net, rank: 3, alpha: 1.5);
        var path = Path.Combine(dir, $"{format}.safetensors");
        LoraFormats.Save(adapter, path, format);
        var loaded = LoraFormats.Load(path, net);
        Assert.Equal(adapter.Layers.Keys.Order(), loaded.Layers.Keys.Order());
        foreach (var (k, layer) in adapter.Layers)
        {
            Assert.True(layer.DownWeight.eq(loaded.Layers[k].DownWeight).all().item<bool>(), k);
            Assert.True(layer.UpWeight.eq(loaded.Layers[k].UpWeight).all().item<bool>(), k);
            Assert.Equal(1.5, loaded.Layers[k].Alpha, 6);
        }
        if (format == LoraFileFormat.Kohya)
            Assert.Contains("lora_unet_down_blocks_0_conv1.lora_down.weight", SafeTensors.ReadHeader(path).Keys);
        else
            Assert.Contains("unet.down_blocks.0.conv1.lora_A.weight", SafeTensors.ReadHeader(path).Keys);
    }

    [Fact]
    public void Peft_alphas_come_from_diffusers_flat_metadata_patterns_or_the_older_nested_form()
    {
        manual_seed(5);
        var net = new Net();
        var adapter = Randomised(net, rank: 2, alpha: 1);
        var path = Path.Combine(dir, "peft.safetensors");
        LoraFormats.Save(adapter, path, LoraFileFormat.Peft);
        var json = System.Text.Json.Nodes.JsonNode.Parse(SafeTensors.ReadMetadata(path)["lora_adapter_metadata"])!.AsObject();
        Assert.Equal(["unet.alpha_pattern", "unet.lora_alpha", "unet.r", "unet.rank_pattern", "unet.target_modules"],
            json.Select(kv => kv.Key).Order());

        var tensors = SafeTensors.Load(path);
        foreach (var (metadata, expected) in new[]
        {
            // diffusers' flat form with a PEFT pattern key (suffix match), a "^"-anchored one, and the default
            ("""{"unet.r": 2, "unet.lora_alpha": 4, "unet.alpha_pattern": {"0.to_q": 6, "^down_blocks.1.conv1": 8}}""",
                new Dictionary<string, double> { ["down_blocks.0.to_q"] = 6, ["down_blocks.1.conv1"] = 8, ["down_blocks.1.to_q"] = 4 }),
            ("""{"unet": {"r": 2, "lora_alpha": 3}}""", new Dictionary<string, double> { ["down_blocks.0.conv1"] = 3 }),
        })
        {
            SafeTensors.Save(path, tensors, new Dictionary<string, string> { ["lora_adapter_metadata"] = metadata });
            using var loaded = LoraFormats.Load(path, net);
            foreach (var (module, alpha) in expected) Assert.Equal(alpha, loaded.Layers[module].Alpha);
        }
    }

    [Fact]
    public void A_lora_for_another_model_is_refused_with_the_key_and_the_shapes()
    {
        var net = new Net();
        var path = Path.Combine(dir, "bad.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor>
        {
            ["lora_unet_mid_block_conv1.lora_down.weight"] = zeros(2, 3, 3, 3),
            ["lora_unet_mid_block_conv1.lora_up.weight"] = zeros(6, 2, 1, 1),
        });
        var e = Assert.Throws<InvalidDataException>(() => LoraFormats.Load(path, net));
        Assert.Contains("lora_unet_mid_block_conv1", e.Message);
        Assert.Contains(path, e.Message);
        Assert.EndsWith("(a LoRA for another base model?)", e.Message);

        SafeTensors.Save(path, new Dictionary<string, Tensor>
        {
            ["lora_unet_down_blocks_0_to_q.lora_down.weight"] = zeros(2, 5),
            ["lora_unet_down_blocks_0_to_q.lora_up.weight"] = zeros(6, 2),
        });
        e = Assert.Throws<InvalidDataException>(() => LoraFormats.Load(path, net));
        Assert.Contains("[2, 5]", e.Message);
        Assert.Contains("[2, 6]", e.Message);
        Assert.EndsWith("(a LoRA for another base model?)", e.Message);
    }
}
