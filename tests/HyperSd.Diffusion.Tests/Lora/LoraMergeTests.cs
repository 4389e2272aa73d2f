using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Unets;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Lora;

/// <summary>The LoRA merger on a tiny SD1.5-topology UNet (attention Linear layers, 1×1 proj/shortcut convs, 3×3 resnet
/// and sampler convs, time projections): weighted sums, SVD re-factorisation and its energy report, the kohya and PEFT
/// files as kohya/diffusers read them, fusing, and the bad inputs.</summary>
public class LoraMergeTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("lora-merge-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    static UNet2DConditionConfig TinyConfig(int width = 16) => new()
    {
        BlockOutChannels = [width, 2 * width], DownBlockTypes = ["CrossAttnDownBlock2D", "DownBlock2D"],
        UpBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D"], LayersPerBlock = 1, CrossAttentionDim = 16, AttentionHeadDim = 2,
        NormNumGroups = 4, SampleSize = 8,
    };

    static UNet2DConditionModel TinyUnet(int width = 16)
    {
        manual_seed(0);
        var unet = new UNet2DConditionModel(TinyConfig(width));
        unet.eval();
        return unet;
    }

    /// <summary>A LoRA on the LCM targets with random up and down weights (a trained-looking LoRA, not PEFT's zero init).</summary>
    static LoraAdapter RandomLora(UNet2DConditionModel unet, int rank, double alpha, long seed, IReadOnlyList<string>? targets = null)
    {
        manual_seed(seed);
        var adapter = LoraAdapter.Create(unet, new LoraConfig(rank, alpha, targets));
        using var _ = no_grad();
        foreach (var layer in adapter.Layers.Values)
        {
            layer.UpWeight.normal_(0, 0.3);
            layer.DownWeight.normal_(0, 0.3);
        }
        return adapter;
    }

    static List<LoraAdapter> ThreeLoras(UNet2DConditionModel unet) =>
        [RandomLora(unet, 2, 1, seed: 1), RandomLora(unet, 3, 6, seed: 2), RandomLora(unet, 4, 4, seed: 3)];

    static readonly double[] Weights = [0.5, 1.0, -0.3];

    static double SquaredError(Tensor a, Tensor b) => a.to(float64).sub(b.to(float64)).square().sum().item<double>();

    static double MaxAbs(Tensor a) => a.abs().max().to(float64).item<double>();

    [Theory]
    [InlineData(9, 2, 3, 4)]     // ranks sum below every module's dimensions: the QR-core SVD
    [InlineData(16, 4, 6, 6)]    // ranks sum to the smallest modules' full rank: the dense SVD there
    public void At_full_rank_the_merged_lora_reproduces_the_weighted_sum(int rank, int r1, int r2, int r3)
    {
        using var unet = TinyUnet();
        List<LoraAdapter> loras = [RandomLora(unet, r1, 1, 1), RandomLora(unet, r2, 6, 2), RandomLora(unet, r3, r3, 3)];
        using var merged = LoraMerge.Merge(unet, loras, Weights, new LoraMergeOptions { Rank = rank });

        Assert.Equal(loras[0].Layers.Keys.Order(), merged.Adapter.Layers.Keys.Order());
        Assert.Contains(merged.Adapter.Layers.Values, l => l.BaseWeightShape is [_, _, 3, 3]);
        Assert.Contains(merged.Adapter.Layers.Values, l => l.BaseWeightShape is [_, _, 1, 1]);
        Assert.Contains(merged.Adapter.Layers.Values, l => l.BaseWeightShape.Length == 2);
        foreach (var (path, layer) in merged.Adapter.Layers)
        {
            Assert.Equal((rank, (double)rank), (layer.Rank, layer.Alpha));
            using var expected = LoraMerge.WeightedDelta(loras, Weights, path);
            using var manual = loras.Select((l, i) => l.Layers[path].Delta().to(float64) * Weights[i]).Aggregate((a, b) => a + b);
            Assert.True(expected.allclose(manual, rtol: 1e-5, atol: 1e-6), $"{path}: WeightedDelta differs from Σ w·Delta()");
            using var actual = layer.Delta();
            double error = MaxAbs(actual.to(float64) - expected);
            Assert.True(error < 1e-5, $"{path}: max |merged − weighted sum| = {error}");
        }
        Assert.True(merged.Report.DiscardedFraction < 1e-12, merged.Report.ToString());
        foreach (var l in loras) l.Dispose();
    }

    [Theory]
    [InlineData(SingularValueSplit.Balanced)]
    [InlineData(SingularValueSplit.AllInUp)]
    public void Below_full_rank_the_error_is_the_discarded_energy(SingularValueSplit split)
    {
        using var unet = TinyUnet();
        var loras = ThreeLoras(unet);
        using var merged = LoraMerge.Merge(unet, loras, Weights,
            new LoraMergeOptions { Rank = 3, ConvRank = 2, Split = split, DType = ScalarType.Float64 });

        double totalError = 0, totalEnergy = 0;
        foreach (var m in merged.Report.Modules)
        {
            var layer = merged.Adapter.Layers[m.Module];
            Assert.Equal(m.WeightShape is [_, _, 3, 3] ? 2 : 3, layer.Rank);
            using var exact = LoraMerge.WeightedDelta(loras, Weights, m.Module);
            double error = SquaredError(layer.Delta(), exact);
            double energy = exact.square().sum().item<double>();
            // Eckart–Young: the best rank-k approximation's squared Frobenius error is the sum of the discarded σ².
            Assert.True(Math.Abs(error - m.DiscardedEnergy) <= 1e-9 * energy, $"{m.Module}: error {error}, reported {m.DiscardedEnergy}");
            Assert.True(Math.Abs(energy - m.Energy) <= 1e-9 * energy, $"{m.Module}: energy {energy}, reported {m.Energy}");
            Assert.True(m.DiscardedEnergy > 0, m.Module);
            totalError += error; totalEnergy += energy;

            using var up = layer.UpWeight.reshape(layer.UpWeight.shape[0], -1);
            using var down = layer.DownWeight.reshape(layer.Rank, -1);
            using var upNorms = up.norm(0);
            using var downNorms = down.norm(1);
            if (split == SingularValueSplit.Balanced)
                Assert.True(upNorms.allclose(downNorms, rtol: 1e-9), $"{m.Module}: balanced factors have equal column/row norms");
            else
                Assert.True(down.matmul(down.T).allclose(eye(layer.Rank, dtype: float64), atol: 1e-9), $"{m.Module}: down is orthonormal");
        }
        Assert.Equal(totalError / totalEnergy, merged.Report.DiscardedFraction, 9);
        Assert.InRange(merged.Report.DiscardedFraction, 1e-3, 1);
        Assert.Equal([0.5, 1.0, -0.3], merged.Report.Weights);
        foreach (var l in loras) l.Dispose();
    }

    [Theory]
    [InlineData(LoraFileFormat.Kohya)]
    [InlineData(LoraFileFormat.Peft)]
    public void Saved_and_loaded_back_the_deltas_are_the_merged_ones(LoraFileFormat format)
    {
        using var unet = TinyUnet();
        var loras = ThreeLoras(unet);
        // per-module ranks: 3×3 convs get their own rank and one module a pattern rank, so PEFT needs rank_pattern
        var patterned = loras[0].Layers.Keys.First(k => k.EndsWith("attn2.to_k", StringComparison.Ordinal));
        using var merged = LoraMerge.Merge(unet, loras, Weights,
            new LoraMergeOptions { Rank = 4, ConvRank = 6, RankPattern = new Dictionary<string, int> { [patterned] = 2 } });
        var path = Path.Combine(dir, $"merged-{format}.safetensors");
        merged.Save(path, format);

        using var loaded = LoraFormats.Load(path, unet);
        Assert.Equal(merged.Adapter.Layers.Keys.Order(), loaded.Layers.Keys.Order());
        foreach (var m in merged.Report.Modules)
        {
            var layer = loaded.Layers[m.Module];
            Assert.Equal((m.Rank, (double)m.Rank), (layer.Rank, layer.Alpha));
            using var mergedDelta = merged.Adapter.Layers[m.Module].Delta();
            Assert.True(layer.Delta().eq(mergedDelta).all().item<bool>(), m.Module);
            using var exact = LoraMerge.WeightedDelta(loras, Weights, m.Module);
            double error = SquaredError(layer.Delta(), exact);
            Assert.True(Math.Abs(error - m.DiscardedEnergy) <= 1e-5 * m.Energy,
                $"{m.Module}: error {error}, discarded {m.DiscardedEnergy}");
        }
        Assert.Equal(2, loaded.Layers[patterned].Rank);

        var keys = SafeTensors.ReadHeader(path).Keys.ToHashSet();
        var metadata = SafeTensors.ReadMetadata(path);
        Assert.Contains("hypersd_merge", metadata.Keys);
        if (format == LoraFileFormat.Kohya)
        {
            Assert.Contains("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight", keys);
            Assert.Contains("lora_unet_up_blocks_1_resnets_0_conv_shortcut.lora_up.weight", keys);
            Assert.Contains("lora_unet_down_blocks_0_downsamplers_0_conv.alpha", keys);
            Assert.Equal("networks.lora", metadata["ss_network_module"]);
            AssertDiffusersReadsKohyaKeys(keys, merged.Adapter);
        }
        else
        {
            Assert.Contains("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight", keys);
            Assert.Contains("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight", keys);
            AssertPeftConfigBuildsTheLayers(path, merged.Adapter);
        }
        foreach (var l in loras) l.Dispose();
    }

    /// <summary>What diffusers' <c>load_lora_weights</c> does with a PEFT-format file's metadata: take
    /// <c>lora_adapter_metadata</c>, keep the <c>"unet."</c> keys with the prefix stripped, and build
    /// <c>LoraConfig(**kwargs)</c>; PEFT then gives each target module the rank and alpha of the first rank_pattern /
    /// alpha_pattern key matching <c>(.*\.)?key$</c>, else r / lora_alpha. Those must be the file's shapes and alphas.</summary>
    static void AssertPeftConfigBuildsTheLayers(string path, LoraAdapter adapter)
    {
        var json = JsonNode.Parse(SafeTensors.ReadMetadata(path)["lora_adapter_metadata"])!.AsObject();
        var config = json.Where(kv => kv.Key.StartsWith("unet.", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key["unet.".Length..], kv => kv.Value);
        Assert.Equal(json.Count, config.Count);
        var known = new[] { "r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern" };
        Assert.All(config.Keys, k => Assert.Contains(k, known));   // LoraConfig(**kwargs) would refuse others
        int r = config["r"]!.GetValue<int>();
        double alpha = config["lora_alpha"]!.GetValue<double>();
        var targets = config["target_modules"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        var ranks = config["rank_pattern"]!.AsObject();
        var alphas = config["alpha_pattern"]!.AsObject();
        Assert.NotEmpty(ranks);
        Assert.Equal(adapter.Layers.Keys.Order(), targets.Order());
        static JsonNode? Match(JsonObject pattern, string module) =>
            pattern.FirstOrDefault(kv => Regex.IsMatch(module, @"^(.*\.)?(" + kv.Key + ")$")).Value;
        foreach (var (module, layer) in adapter.Layers)
        {
            Assert.Equal(layer.Rank, Match(ranks, module)?.GetValue<int>() ?? r);
            Assert.Equal(layer.Alpha, Match(alphas, module)?.GetValue<double>() ?? alpha);
        }
    }

    /// <summary>diffusers' conversion of kohya UNet keys (lora_conversion_utils._convert_unet_lora_key, the SD1.x
    /// rules, then convert_unet_state_dict_to_peft) must map every key of the file to "module.lora_A/B.weight".</summary>
    static void AssertDiffusersReadsKohyaKeys(IEnumerable<string> keys, LoraAdapter adapter)
    {
        (string, string)[] renames =
        [
            ("input.blocks", "down_blocks"), ("down.blocks", "down_blocks"), ("middle.block", "mid_block"), ("mid.block", "mid_block"),
            ("output.blocks", "up_blocks"), ("up.blocks", "up_blocks"), ("transformer.blocks", "transformer_blocks"),
            ("to.q.lora", "to_q_lora"), ("to.k.lora", "to_k_lora"), ("to.v.lora", "to_v_lora"), ("to.out.0.lora", "to_out_lora"),
            ("proj.in", "proj_in"), ("proj.out", "proj_out"), ("emb.layers", "time_emb_proj"), ("conv.in", "conv_in"),
            ("conv.out", "conv_out"),
        ];
        (string, string)[] toPeft =
        [
            (".to_out_lora.up", ".to_out.0.lora_B"), (".to_out_lora.down", ".to_out.0.lora_A"), (".to_q_lora.down", ".to_q.lora_A"),
            (".to_q_lora.up", ".to_q.lora_B"), (".to_k_lora.down", ".to_k.lora_A"), (".to_k_lora.up", ".to_k.lora_B"),
            (".to_v_lora.down", ".to_v.lora_A"), (".to_v_lora.up", ".to_v.lora_B"), (".lora.up", ".lora_B"), (".lora.down", ".lora_A"),
        ];
        var expected = adapter.Layers.Keys.SelectMany(m => new[] { m + ".lora_A.weight", m + ".lora_B.weight" }).Order().ToList();
        var converted = new List<string>();
        foreach (var key in keys.Where(k => !k.EndsWith(".alpha", StringComparison.Ordinal)))
        {
            var name = key.Replace("lora_unet_", "").Replace('_', '.');
            foreach (var (from, to) in renames) name = name.Replace(from, to);
            if (name.Contains("downsamplers") || name.Contains("upsamplers")) name = name.Replace("op", "conv");
            if (name.Contains("time.emb.proj")) name = name.Replace("time.emb.proj", "time_emb_proj");
            if (name.Contains("conv.shortcut")) name = name.Replace("conv.shortcut", "conv_shortcut");
            if (name.Contains("transformer_blocks")) name = name.Replace("attn1", "attn1.processor").Replace("attn2", "attn2.processor");
            name = name.Replace(".processor.", ".");
            foreach (var (from, to) in toPeft) name = name.Replace(from, to);
            converted.Add(name);
        }
        Assert.Equal(expected, converted.Order().ToList());
    }

    [Fact]
    public void A_merged_and_fused_unet_computes_what_the_attached_loras_compute()
    {
        using var unet = TinyUnet();
        var loras = ThreeLoras(unet);
        manual_seed(7);
        var sample = randn(1, 4, 8, 8);
        var timestep = tensor(500L);
        var text = randn(1, 5, 16);
        Tensor Run(UNet2DConditionModel u) { using var _ = no_grad(); return u.forward(sample, timestep, text); }

        var plain = Run(unet);
        for (int i = 0; i < loras.Count; i++) { loras[i].Weight = Weights[i]; loras[i].Attach(unet); }
        var attached = Run(unet);
        foreach (var l in loras) l.Detach();
        Assert.True(MaxAbs(attached - plain) > 1e-2, "the LoRAs change the output");
        // the base's weights before FuseAndSave changes them (a second TinyUnet() would draw from LibTorch's global
        // generator, which tests running in parallel also draw from)
        var original = unet.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());

        using var merged = LoraMerge.Merge(unet, loras, Weights, new LoraMergeOptions { Rank = 9 });
        var unetDir = Path.Combine(dir, "unet");
        LoraMerge.FuseAndSave(unet, merged.Adapter, unetDir);
        Assert.True(File.Exists(Path.Combine(unetDir, "config.json")));
        Assert.True(File.Exists(Path.Combine(unetDir, "diffusion_pytorch_model.safetensors")));
        using var standalone = UNet2DConditionModel.FromPretrained(unetDir);
        var fused = Run(standalone);
        double error = MaxAbs(fused - attached);
        Assert.True(error < 1e-4 * (1 + MaxAbs(attached)), $"fused vs attached: {error}");

        // fusing the exact weighted sum into a fresh base gives the same model
        using var base2 = TinyUnet();
        using (no_grad())
            foreach (var (name, p) in base2.named_parameters()) p.copy_(original[name]);
        LoraMerge.Fuse(base2, loras, Weights);
        double exact = MaxAbs(Run(base2) - attached);
        Assert.True(exact < 1e-4 * (1 + MaxAbs(attached)), $"exact sum fused vs attached: {exact}");
        foreach (var t in original.Values) t.Dispose();
        foreach (var l in loras) l.Dispose();
    }

    [Fact]
    public void Loras_on_different_modules_are_refused_naming_the_modules()
    {
        using var unet = TinyUnet();
        using var a = RandomLora(unet, 2, 2, 1);
        using var b = RandomLora(unet, 2, 2, 2, targets: ["to_q", "to_k", "to_v", "to_out.0", "conv_shortcut"]);
        var e = Assert.Throws<ArgumentException>(() =>
            LoraMerge.Merge(unet, [a, b], [1.0, 1.0], names: ["a.safetensors", "b.safetensors"]));
        Assert.Contains("different modules", e.Message);
        Assert.Contains("b.safetensors lacks", e.Message);
        Assert.Contains("'down_blocks.0.attentions.0.proj_in'", e.Message);
        e = Assert.Throws<ArgumentException>(() => LoraMerge.Merge(unet, [b, a], [1.0, 1.0]));
        Assert.Contains("LoRA 1 has ['down_blocks.0.attentions.0.proj_in'", e.Message);
    }

    [Fact]
    public void A_lora_for_another_base_is_refused_naming_the_key_and_the_shapes()
    {
        using var unet = TinyUnet();
        using var other = TinyUnet(width: 8);
        using var good = RandomLora(unet, 2, 2, 1);
        using var foreign = RandomLora(other, 2, 2, 2);
        var e = Assert.Throws<ArgumentException>(() => LoraMerge.Merge(unet, [good, foreign], [1.0, 1.0]));
        Assert.Contains("LoRA 1: module 'down_blocks.0.attentions.0.proj_in' (key lora_unet_down_blocks_0_attentions_0_proj_in)",
            e.Message);
        Assert.Contains("[8, 8, 1, 1]", e.Message);
        Assert.Contains("[16, 16, 1, 1]", e.Message);

        // from files: the loader names the file, the module and the shapes
        var path = Path.Combine(dir, "foreign.safetensors");
        LoraFormats.Save(foreign, path, LoraFileFormat.Kohya);
        var goodPath = Path.Combine(dir, "good.safetensors");
        LoraFormats.Save(good, goodPath, LoraFileFormat.Peft);
        var f = Assert.Throws<InvalidDataException>(() => LoraMerge.Merge(unet, [goodPath, path], [1.0, 1.0]));
        Assert.Contains(path, f.Message);
        Assert.Contains("'down_blocks.0.", f.Message);
        using var fromFiles = LoraMerge.Merge(unet, [goodPath, goodPath], [0.25, 0.75], new LoraMergeOptions { Rank = 2 });
        Assert.Equal([goodPath, goodPath], fromFiles.Report.Sources);
        Assert.True(fromFiles.Report.DiscardedFraction < 1e-12);
    }

    [Theory]
    [InlineData(0, null, "target rank 0 for module 'down_blocks.0.attentions.0.proj_in'", "[1, 16]")]
    [InlineData(17, null, "target rank 17 for module 'down_blocks.0.attentions.0.proj_in'", "[1, 16]")]
    [InlineData(4, 40, "target rank 40 for module 'down_blocks.0.downsamplers.0.conv'", "flattens to 16 × 144")]
    [InlineData(4, -1, "target rank -1 for module 'down_blocks.0.downsamplers.0.conv'", "[1, 16]")]
    public void A_target_rank_out_of_range_is_refused_naming_the_module_and_the_limits(
        int rank, int? convRank, string what, string limits)
    {
        using var unet = TinyUnet();
        using var a = RandomLora(unet, 2, 2, 1);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            LoraMerge.Merge(unet, [a], [1.0], new LoraMergeOptions { Rank = rank, ConvRank = convRank }));
        Assert.Contains(what, e.Message);
        Assert.Contains(limits, e.Message);
        if (rank > 16)
        {
            using var clamped = LoraMerge.Merge(unet, [a], [1.0], new LoraMergeOptions { Rank = rank, ClampRankToModule = true });
            Assert.All(clamped.Report.Modules, m => Assert.Equal(Math.Min(rank, m.MaxRank), m.Rank));
        }
    }

    [Fact]
    public void Weights_that_do_not_fit_are_refused()
    {
        using var unet = TinyUnet();
        using var a = RandomLora(unet, 2, 2, 1);
        using var b = RandomLora(unet, 2, 2, 2);
        var e = Assert.Throws<ArgumentException>(() => LoraMerge.Merge(unet, [a, b], [1.0]));
        Assert.Contains("1 weights for 2 LoRAs", e.Message);
        e = Assert.Throws<ArgumentException>(() => LoraMerge.Merge(unet, [a, b], [0.0, 0.0]));
        Assert.Contains("all merge weights are zero", e.Message);
        e = Assert.Throws<ArgumentException>(() => LoraMerge.Merge(unet, [a, b], [1.0, double.NaN]));
        Assert.Contains("weight 1 is NaN", e.Message);
        e = Assert.Throws<ArgumentException>(() => LoraMerge.Merge(unet, Array.Empty<LoraAdapter>(), []));
        Assert.Contains("no LoRAs", e.Message);
        e = Assert.Throws<ArgumentException>(() => LoraMerge.Merge(unet, [a], [1.0],
            new LoraMergeOptions { Rank = 2, RankPattern = new Dictionary<string, int> { ["mid_block.nothing"] = 2 } }));
        Assert.Contains("'mid_block.nothing'", e.Message);
    }
}
