using System.Text.Json.Nodes;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.TextEncoders;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Loaders.SingleFile;

/// <summary>The diffusers component a single-file tensor belongs to.</summary>
public enum Component { Unet, Vae, TextEncoder }

/// <summary>Where one single-file tensor goes: a component, its diffusers/transformers key, and whether the tensor is a
/// 1×1 conv weight that diffusers holds as a Linear weight.</summary>
public sealed record SingleFileTarget(Component Component, string DiffusersKey, bool SqueezeConv1x1 = false)
{
    /// <summary>The shape the tensor has in the diffusers model: [out, in, 1, 1] → [out, in] where squeezed.</summary>
    public long[] ConvertShape(long[] shape)
    {
        if (!SqueezeConv1x1 || shape.Length == 2) return shape; // already a Linear weight (re-saved checkpoints)
        if (shape is [var o, var i, 1, 1]) return [o, i];
        throw new InvalidDataException(
            $"{Component} '{DiffusersKey}' takes a [out, in, 1, 1] conv or [out, in] linear weight, got [{string.Join(", ", shape)}]");
    }

    public Tensor Convert(Tensor tensor) => ConvertShape(tensor.shape) is var s && s.Length != tensor.dim() ? tensor.reshape(s) : tensor;

    /// <summary>The inverse of <see cref="Convert"/>: a diffusers Linear weight back to the [out, in, 1, 1] conv ldm stores.</summary>
    public Tensor ConvertBack(Tensor tensor) =>
        SqueezeConv1x1 && tensor.dim() == 2 ? tensor.reshape(tensor.shape[0], tensor.shape[1], 1, 1) : tensor;
}

/// <summary>
/// The key map from the original single-file Stable Diffusion 1.x checkpoint (CompVis/ldm names
/// <c>model.diffusion_model.*</c>, <c>first_stage_model.*</c>, <c>cond_stage_model.transformer.*</c>) to the diffusers
/// components, as diffusers' <c>convert_ldm_unet_checkpoint</c>, <c>convert_ldm_vae_checkpoint</c> and
/// <c>convert_ldm_clip_checkpoint</c> do. Built from the component configs, so other widths and depths map too.
/// </summary>
/// <remarks>A rule maps a module path (e.g. <c>model.diffusion_model.input_blocks.1.0.in_layers.0</c>) to a diffusers
/// module path (<c>down_blocks.0.resnets.0.norm1</c>); the rest of the key (<c>.weight</c>, or a whole transformer
/// sub-tree whose names ldm and diffusers share) is appended unchanged. The longest matching rule wins.</remarks>
public sealed class SingleFileKeyMap
{
    const string UnetPrefix = "model.diffusion_model.";
    const string VaePrefix = "first_stage_model.";
    // transformers < 4.? saved CLIPTextModel without the text_model level; both layouts occur in published files.
    // The first (that of the released SD1.5 checkpoints) is the one Join writes.
    static readonly string[] TextPrefixes = ["cond_stage_model.transformer.", "cond_stage_model.transformer.text_model."];

    /// <summary>Non-weight entries of SD1.x files: the EMA copy (flattened names, <c>model_ema.decay</c>,
    /// <c>model_ema.num_updates</c>), LatentDiffusion's noise-schedule buffers (and <c>logvar</c> when learned), and
    /// CLIP's <c>position_ids</c> buffer.</summary>
    static readonly HashSet<string> IgnoredKeys =
    [
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
        "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "logvar",
        .. TextPrefixes.Select(p => p + "embeddings.position_ids"),
    ];

    static readonly (string Ldm, string Diffusers)[] UnetResnet =
    [
        ("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
        ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"),
    ];

    static readonly (string Ldm, string Diffusers)[] VaeResnet =
        [("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"), ("nin_shortcut", "conv_shortcut")];

    readonly Dictionary<string, (Component Component, string Module, bool Squeeze)> rules = new(StringComparer.Ordinal);
    // The same rules read backwards; where several ldm names map onto one module the first added is the export name.
    readonly Dictionary<(Component, string), string> inverse = new();

    SingleFileKeyMap() { }

    /// <summary>True for keys of single-file checkpoints that hold no model weight and are dropped.</summary>
    public static bool IsIgnored(string key) => IgnoredKeys.Contains(key) || key.StartsWith("model_ema.", StringComparison.Ordinal);

    /// <summary>Where <paramref name="singleFileKey"/> goes, or null when no rule knows it (ignored extras included).</summary>
    public SingleFileTarget? Map(string singleFileKey)
    {
        for (int end = singleFileKey.LastIndexOf('.'); end > 0; end = singleFileKey.LastIndexOf('.', end - 1))
            if (rules.TryGetValue(singleFileKey[..end], out var rule))
                return new(rule.Component, rule.Module + singleFileKey[end..], rule.Squeeze && singleFileKey[end..] == ".weight");
        return null;
    }

    /// <summary>The single-file key <paramref name="diffusersKey"/> of <paramref name="component"/> is saved under (the
    /// inverse of <see cref="Map"/>), or null when no rule knows it.</summary>
    public string? Unmap(Component component, string diffusersKey)
    {
        for (int end = diffusersKey.LastIndexOf('.'); end > 0; end = diffusersKey.LastIndexOf('.', end - 1))
            if (inverse.TryGetValue((component, diffusersKey[..end]), out var ldm))
                return ldm + diffusersKey[end..];
        return null;
    }

    /// <summary>The inverse of <see cref="Split"/>: joins per-component diffusers dictionaries into one single-file
    /// checkpoint (1×1 attention convs unsqueezed). Throws naming every key it cannot map.</summary>
    public Dictionary<string, Tensor> Join(IReadOnlyDictionary<Component, Dictionary<string, Tensor>> components)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var problems = new List<string>();
        foreach (var (component, tensors) in components)
            foreach (var (key, tensor) in tensors)
            {
                if (Unmap(component, key) is { } singleFileKey && Map(singleFileKey) is { } target)
                    result[singleFileKey] = target.ConvertBack(tensor);
                else
                    problems.Add($"{component} '{key}'");
            }
        if (problems.Count > 0)
            throw new InvalidDataException(
                $"cannot write these keys in the single-file Stable Diffusion layout: {problems.Count} key(s):\n  "
                + string.Join("\n  ", problems.Take(20)) + (problems.Count > 20 ? $"\n  … and {problems.Count - 20} more" : ""));
        return result;
    }

    /// <summary>Splits a single-file checkpoint into per-component dictionaries with diffusers keys (1×1 attention convs
    /// squeezed), dropping the known extras. Throws naming <paramref name="file"/> and every key it cannot map.</summary>
    public IReadOnlyDictionary<Component, Dictionary<string, Tensor>> Split(IReadOnlyDictionary<string, Tensor> checkpoint, string file)
    {
        var result = Enum.GetValues<Component>().ToDictionary(c => c, _ => new Dictionary<string, Tensor>(StringComparer.Ordinal));
        var sourceOf = new Dictionary<(Component, string), string>();
        var problems = new List<string>();
        foreach (var (key, tensor) in checkpoint)
        {
            if (IsIgnored(key)) continue;
            if (Map(key) is not { } target)
            {
                problems.Add($"unmapped key '{key}'");
                continue;
            }
            if (!sourceOf.TryAdd((target.Component, target.DiffusersKey), key))
            {
                problems.Add($"keys '{sourceOf[(target.Component, target.DiffusersKey)]}' and '{key}' " +
                             $"both map to {target.Component} '{target.DiffusersKey}'");
                continue;
            }
            try { result[target.Component][target.DiffusersKey] = target.Convert(tensor); }
            catch (InvalidDataException e) { problems.Add($"key '{key}': {e.Message}"); }
        }
        if (problems.Count > 0)
            throw new InvalidDataException(
                $"{file}: cannot map this single-file Stable Diffusion checkpoint onto the diffusers components: " +
                $"{problems.Count} problem(s):\n  "
                + string.Join("\n  ", problems.Take(20)) + (problems.Count > 20 ? $"\n  … and {problems.Count - 20} more" : ""));
        return result;
    }

    /// <summary>Loads a single-file safetensors checkpoint and <see cref="Split"/>s it.</summary>
    public IReadOnlyDictionary<Component, Dictionary<string, Tensor>> SplitFile(string path) => Split(SafeTensors.Load(path), path);

    /// <summary>The map for the SD1.x layout with the given component shapes.</summary>
    /// <param name="unetLevels">UNet <c>block_out_channels</c> count.</param>
    /// <param name="unetLayersPerBlock">UNet <c>layers_per_block</c> (ldm <c>num_res_blocks</c>).</param>
    /// <param name="downHasAttention">Per down block: does it have transformers (CrossAttnDownBlock2D)?</param>
    /// <param name="upHasAttention">Per up block, in diffusers order (deepest first).</param>
    /// <param name="vaeLevels">VAE <c>block_out_channels</c> count.</param>
    /// <param name="vaeLayersPerBlock">VAE <c>layers_per_block</c>.</param>
    /// <param name="textLayers">CLIP text <c>num_hidden_layers</c>.</param>
    public static SingleFileKeyMap ForStableDiffusion15(int unetLevels, int unetLayersPerBlock,
        IReadOnlyList<bool> downHasAttention, IReadOnlyList<bool> upHasAttention, int vaeLevels, int vaeLayersPerBlock, int textLayers)
    {
        Positive(unetLevels, nameof(unetLevels)); Positive(unetLayersPerBlock, nameof(unetLayersPerBlock));
        Positive(vaeLevels, nameof(vaeLevels)); Positive(vaeLayersPerBlock, nameof(vaeLayersPerBlock));
        Positive(textLayers, nameof(textLayers));
        if (downHasAttention.Count != unetLevels || upHasAttention.Count != unetLevels)
            throw new ArgumentException(
                $"expected {unetLevels} down and up block attention flags, got {downHasAttention.Count} and {upHasAttention.Count}");
        var map = new SingleFileKeyMap();
        map.AddUnet(unetLevels, unetLayersPerBlock, downHasAttention, upHasAttention);
        map.AddVae(vaeLevels, vaeLayersPerBlock);
        map.AddTextEncoder(textLayers);
        return map;
    }

    /// <summary>The map for components described by their diffusers/transformers config.json objects (as in the
    /// fixture layouts' <c>config</c>).</summary>
    public static SingleFileKeyMap FromConfigs(JsonObject unet, JsonObject vae, JsonObject textEncoder)
    {
        var down = Field(unet, "down_block_types", "UNet").AsArray().Select(t => HasAttention(t!.GetValue<string>())).ToArray();
        var up = Field(unet, "up_block_types", "UNet").AsArray().Select(t => HasAttention(t!.GetValue<string>())).ToArray();
        return ForStableDiffusion15(
            Field(unet, "block_out_channels", "UNet").AsArray().Count, Field(unet, "layers_per_block", "UNet").GetValue<int>(), down, up,
            Field(vae, "block_out_channels", "VAE").AsArray().Count, Field(vae, "layers_per_block", "VAE").GetValue<int>(),
            Field(textEncoder, "num_hidden_layers", "text encoder").GetValue<int>());
    }

    /// <summary>The map for components described by their config records.</summary>
    public static SingleFileKeyMap FromConfigs(UNet2DConditionConfig unet, AutoencoderKLConfig vae, CLIPTextConfig textEncoder)
    {
        // ldm's num_res_blocks is one number for every level.
        if (unet.LayersPerBlock.Values.Distinct().Count() != 1)
            throw new ArgumentException($"UNet config field 'layers_per_block' is [{string.Join(", ", unet.LayersPerBlock.Values)}]; " +
                                        "the single-file layout needs the same count for every block");
        return ForStableDiffusion15(unet.BlockCount, unet.LayersPerBlock[0],
            unet.DownBlockTypes.Select(HasAttention).ToArray(), unet.UpBlockTypes.Select(HasAttention).ToArray(),
            vae.BlockOutChannels.Length, vae.LayersPerBlock, textEncoder.NumHiddenLayers);
    }

    void AddUnet(int levels, int layers, IReadOnlyList<bool> downAttention, IReadOnlyList<bool> upAttention)
    {
        const string U = UnetPrefix;
        Add(U + "time_embed.0", Component.Unet, "time_embedding.linear_1");
        Add(U + "time_embed.2", Component.Unet, "time_embedding.linear_2");
        Add(U + "input_blocks.0.0", Component.Unet, "conv_in");
        Add(U + "out.0", Component.Unet, "conv_norm_out");
        Add(U + "out.2", Component.Unet, "conv_out");

        // ldm numbers the down path flat: conv_in, then per level `layers` (resnet, transformer) pairs and a downsampler.
        int input = 1;
        for (int b = 0; b < levels; b++)
        {
            for (int l = 0; l < layers; l++, input++)
            {
                AddAll(U + $"input_blocks.{input}.0", Component.Unet, $"down_blocks.{b}.resnets.{l}", UnetResnet);
                if (downAttention[b]) Add(U + $"input_blocks.{input}.1", Component.Unet, $"down_blocks.{b}.attentions.{l}");
            }
            if (b < levels - 1)
                Add(U + $"input_blocks.{input++}.0.op", Component.Unet, $"down_blocks.{b}.downsamplers.0.conv");
        }

        AddAll(U + "middle_block.0", Component.Unet, "mid_block.resnets.0", UnetResnet);
        Add(U + "middle_block.1", Component.Unet, "mid_block.attentions.0");
        AddAll(U + "middle_block.2", Component.Unet, "mid_block.resnets.1", UnetResnet);

        // The up path has one more layer per level; the upsampler sits after the last layer's resnet (and transformer).
        int output = 0;
        for (int b = 0; b < levels; b++)
            for (int l = 0; l <= layers; l++, output++)
            {
                AddAll(U + $"output_blocks.{output}.0", Component.Unet, $"up_blocks.{b}.resnets.{l}", UnetResnet);
                if (upAttention[b]) Add(U + $"output_blocks.{output}.1", Component.Unet, $"up_blocks.{b}.attentions.{l}");
                if (b < levels - 1 && l == layers)
                    Add(U + $"output_blocks.{output}.{(upAttention[b] ? 2 : 1)}.conv", Component.Unet, $"up_blocks.{b}.upsamplers.0.conv");
            }
    }

    void AddVae(int levels, int layers)
    {
        const string V = VaePrefix;
        Add(V + "quant_conv", Component.Vae, "quant_conv");
        Add(V + "post_quant_conv", Component.Vae, "post_quant_conv");
        foreach (var coder in new[] { "encoder", "decoder" })
        {
            Add(V + $"{coder}.conv_in", Component.Vae, $"{coder}.conv_in");
            Add(V + $"{coder}.conv_out", Component.Vae, $"{coder}.conv_out");
            Add(V + $"{coder}.norm_out", Component.Vae, $"{coder}.conv_norm_out");
            AddAll(V + $"{coder}.mid.block_1", Component.Vae, $"{coder}.mid_block.resnets.0", VaeResnet);
            AddAll(V + $"{coder}.mid.block_2", Component.Vae, $"{coder}.mid_block.resnets.1", VaeResnet);
            // ldm's AttnBlock: 1×1 conv q/k/v/proj_out; diffusers' Attention: Linear to_q/to_k/to_v/to_out.0.
            var attn = V + $"{coder}.mid.attn_1";
            var to = $"{coder}.mid_block.attentions.0";
            Add(attn + ".norm", Component.Vae, to + ".group_norm");
            Add(attn + ".q", Component.Vae, to + ".to_q", squeeze: true);
            Add(attn + ".k", Component.Vae, to + ".to_k", squeeze: true);
            Add(attn + ".v", Component.Vae, to + ".to_v", squeeze: true);
            Add(attn + ".proj_out", Component.Vae, to + ".to_out.0", squeeze: true);
        }
        for (int b = 0; b < levels; b++)
        {
            for (int l = 0; l < layers; l++)
                AddAll(V + $"encoder.down.{b}.block.{l}", Component.Vae, $"encoder.down_blocks.{b}.resnets.{l}", VaeResnet);
            if (b < levels - 1)
                Add(V + $"encoder.down.{b}.downsample.conv", Component.Vae, $"encoder.down_blocks.{b}.downsamplers.0.conv");
        }
        // ldm numbers decoder levels by resolution (up.0 is the finest); diffusers' up_blocks.0 is the deepest.
        for (int b = 0; b < levels; b++)
        {
            int ldm = levels - 1 - b;
            for (int l = 0; l <= layers; l++)
                AddAll(V + $"decoder.up.{ldm}.block.{l}", Component.Vae, $"decoder.up_blocks.{b}.resnets.{l}", VaeResnet);
            if (b < levels - 1)
                Add(V + $"decoder.up.{ldm}.upsample.conv", Component.Vae, $"decoder.up_blocks.{b}.upsamplers.0.conv");
        }
    }

    void AddTextEncoder(int layers)
    {
        foreach (var prefix in TextPrefixes)
        {
            Add(prefix + "embeddings.token_embedding", Component.TextEncoder, "text_model.embeddings.token_embedding");
            Add(prefix + "embeddings.position_embedding", Component.TextEncoder, "text_model.embeddings.position_embedding");
            Add(prefix + "final_layer_norm", Component.TextEncoder, "text_model.final_layer_norm");
            for (int i = 0; i < layers; i++)
                Add(prefix + $"encoder.layers.{i}", Component.TextEncoder, $"text_model.encoder.layers.{i}");
        }
    }

    void Add(string ldmModule, Component component, string diffusersModule, bool squeeze = false)
    {
        rules.Add(ldmModule, (component, diffusersModule, squeeze));
        inverse.TryAdd((component, diffusersModule), ldmModule);
    }

    void AddAll(string ldmModule, Component component, string diffusersModule, (string Ldm, string Diffusers)[] children)
    {
        foreach (var (ldm, diffusers) in children)
            Add($"{ldmModule}.{ldm}", component, $"{diffusersModule}.{diffusers}");
    }

    static bool HasAttention(string blockType) => blockType.Contains("Attn", StringComparison.Ordinal);

    static JsonNode Field(JsonObject config, string name, string what) =>
        config[name] ?? throw new InvalidDataException($"{what} config has no '{name}'");

    static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(name, value, $"{name} must be positive");
    }
}
