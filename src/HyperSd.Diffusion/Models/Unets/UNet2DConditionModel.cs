using HyperSd.Diffusion.Models.Activations;
using HyperSd.Diffusion.Models.Embeddings;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Unets;

/// <summary>SDXL's added conditioning (addition_embed_type "text_time"): the pooled text embedding
/// (batch, pooled width) and the size/crop ids (batch, 6).</summary>
public sealed record UNetAddedConditions(Tensor? TextEmbeds, Tensor? TimeIds);

/// <summary>Intermediate UNet features (e.g. for a discriminator on the frozen teacher): each down block's output,
/// the mid block's output and each up block's output, in forward order. The caller owns (disposes) them.</summary>
public sealed class UNetFeatures : IDisposable
{
    public List<Tensor> Down { get; } = [];
    public Tensor? Mid { get; set; }
    public List<Tensor> Up { get; } = [];

    public IEnumerable<Tensor> All => Mid is null ? [.. Down, .. Up] : [.. Down, Mid, .. Up];

    public void Dispose()
    {
        foreach (var t in All) t.Dispose();
        Down.Clear(); Up.Clear(); Mid = null;
    }
}

/// <summary>diffusers' UNet2DConditionModel (the Stable Diffusion 1.x/2.x and SDXL denoiser) for the block types
/// those models use. The module tree, and so the state-dict keys, are diffusers'.</summary>
public sealed class UNet2DConditionModel : nn.Module
{
    public UNet2DConditionConfig Config { get; }

    readonly Conv2d conv_in;
    readonly Timesteps time_proj;
    readonly TimestepEmbedding time_embedding;
    readonly Timesteps? add_time_proj;
    readonly TimestepEmbedding? add_embedding;
    readonly nn.Module<Tensor, Tensor>? time_embed_act;
    readonly ModuleList<UNetDownBlock> down_blocks;
    readonly UNetMidBlock? mid_block;
    readonly ModuleList<UNetUpBlock> up_blocks;
    readonly GroupNorm conv_norm_out;
    readonly nn.Module<Tensor, Tensor> conv_act;
    readonly Conv2d conv_out;

    public UNet2DConditionModel(UNet2DConditionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(UNet2DConditionModel))
    {
        config.Validate();
        Config = config;
        var c = config;
        int n = c.BlockCount;
        var channels = c.BlockOutChannels;
        int groups = c.NormNumGroups!.Value;

        conv_in = nn.Conv2d(c.InChannels, channels[0], c.ConvInKernel, padding: (c.ConvInKernel - 1) / 2, device: device, dtype: dtype);
        time_proj = new Timesteps(channels[0], c.FlipSinToCos, c.FreqShift);
        time_embedding = new TimestepEmbedding(
            channels[0], c.TimeEmbedDim, c.ActFn, postActFn: c.TimestepPostAct, device: device, dtype: dtype);
        if (c.AdditionEmbedType == "text_time")
        {
            add_time_proj = new Timesteps(c.AdditionTimeEmbedDim!.Value, c.FlipSinToCos, c.FreqShift);
            add_embedding = new TimestepEmbedding(c.ProjectionClassEmbeddingsInputDim!.Value, c.TimeEmbedDim, device: device, dtype: dtype);
        }
        if (c.TimeEmbeddingActFn is not null) time_embed_act = Activation.Get(c.TimeEmbeddingActFn, "time_embedding_act_fn");

        var heads = c.HeadsPerBlock;
        var layers = c.LayersPerBlock.Expand(n);
        var crossDims = c.CrossAttentionDim.Expand(n);
        var transformerLayers = c.TransformerLayersPerBlock.Expand(n);
        var options = new UNetBlockOptions(c.TimeEmbedDim, c.NormEps, c.ActFn, groups, c.Dropout, c.UseLinearProjection, device, dtype);

        var down = new UNetDownBlock[n];
        for (int i = 0; i < n; i++)
            down[i] = UNet2DBlocks.GetDownBlock(
                c.DownBlockTypes[i], layers[i], transformerLayers[i], channels[Math.Max(i - 1, 0)], channels[i],
                addDownsample: i < n - 1, heads[i], crossDims[i], c.DownsamplePadding, options);
        down_blocks = nn.ModuleList(down);

        mid_block = UNet2DBlocks.GetMidBlock(c.MidBlockType, channels[^1], transformerLayers[^1], heads[^1], crossDims[^1],
            c.MidBlockScaleFactor, options);

        // up blocks mirror the down blocks: every per-block list is reversed
        var up = new UNetUpBlock[n];
        for (int i = 0; i < n; i++)
        {
            int r = n - 1 - i;
            up[i] = UNet2DBlocks.GetUpBlock(c.UpBlockTypes[i], layers[r] + 1, transformerLayers[r],
                inChannels: channels[Math.Max(r - 1, 0)], outChannels: channels[r], prevOutputChannel: channels[Math.Min(r + 1, n - 1)],
                addUpsample: i < n - 1, heads[r], crossDims[r], options);
        }
        up_blocks = nn.ModuleList(up);

        conv_norm_out = Norms.GroupNorm(groups, channels[0], c.NormEps, device, dtype);
        conv_act = Activation.Get(c.ActFn);
        conv_out = nn.Conv2d(channels[0], c.OutChannels, c.ConvOutKernel, padding: (c.ConvOutKernel - 1) / 2, device: device, dtype: dtype);
        RegisterComponents();
    }

    public static UNet2DConditionModel FromPretrained(
        string dir, Device? device = null, ScalarType? dtype = null, string? variant = null) =>
        PretrainedModel.Load<UNet2DConditionConfig, UNet2DConditionModel>(dir, c => new UNet2DConditionModel(c, device, dtype), variant);

    public void SavePretrained(string dir) => PretrainedModel.Save(this, Config, dir);

    /// <summary>Predicts the model output (noise, v or x0, as trained) for a noisy latent.</summary>
    /// <param name="sample">Noisy latents (batch, in_channels, height, width).</param>
    /// <param name="timestep">A scalar, one timestep, or one per batch element (integer or fractional).</param>
    /// <param name="encoderHiddenStates">Text encoder states (batch, tokens, cross_attention_dim).</param>
    /// <param name="added">SDXL's text_embeds and time_ids; required when addition_embed_type is "text_time".</param>
    /// <param name="features">When given, receives the down, mid and up block outputs.</param>
    public Tensor forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, UNetAddedConditions? added = null,
        UNetFeatures? features = null)
    {
        if (sample.dim() != 4 || sample.shape[1] != Config.InChannels)
            throw new ArgumentException($"UNet2DConditionModel: sample must be (batch, {Config.InChannels}, height, width), " +
                                        $"got [{string.Join(", ", sample.shape)}]");
        using var scope = NewDisposeScope();
        long batch = sample.shape[0];
        if (Config.CenterInputSample) sample = 2 * sample - 1.0;

        var emb = time_embedding.call(time_proj.call(BatchTimesteps(timestep, batch, sample.device)).to(sample.dtype));
        if (add_embedding is not null) emb = emb + TextTimeEmbedding(added, batch, emb.dtype);
        if (time_embed_act is not null) emb = time_embed_act.call(emb);

        var hidden = conv_in.call(sample);
        var skips = new List<Tensor> { hidden };
        foreach (var block in down_blocks)
        {
            (hidden, var res) = block.forward(hidden, emb, encoderHiddenStates);
            skips.AddRange(res);
            features?.Down.Add(hidden);
        }

        if (mid_block is not null)
        {
            hidden = mid_block.forward(hidden, emb, encoderHiddenStates);
            if (features is not null) features.Mid = hidden;
        }

        // sizes that are not a multiple of the total downsampling factor upsample to the skip connection's size
        int upFactor = 1 << (up_blocks.Count - 1);
        bool forwardUpsampleSize = sample.shape[2] % upFactor != 0 || sample.shape[3] % upFactor != 0;
        for (int i = 0; i < up_blocks.Count; i++)
        {
            var block = up_blocks[i];
            var res = skips.GetRange(skips.Count - block.ResnetCount, block.ResnetCount);
            skips.RemoveRange(skips.Count - block.ResnetCount, block.ResnetCount);
            long[]? upsampleSize = forwardUpsampleSize && i < up_blocks.Count - 1 ? skips[^1].shape[2..] : null;
            hidden = block.forward(hidden, res, emb, encoderHiddenStates, upsampleSize);
            features?.Up.Add(hidden);
        }

        var output = conv_out.call(conv_act.call(conv_norm_out.call(hidden)));
        if (features is not null)
            foreach (var t in features.All) t.MoveToOuterDisposeScope();
        return output.MoveToOuterDisposeScope();
    }

    static Tensor BatchTimesteps(Tensor timestep, long batch, Device device)
    {
        var t = timestep.dim() == 0 ? timestep.unsqueeze(0) : timestep;
        if (t.dim() != 1 || (t.shape[0] != 1 && t.shape[0] != batch))
            throw new ArgumentException($"UNet2DConditionModel: timestep must be a scalar, [1] or [{batch}] (one per sample), " +
                                        $"got [{string.Join(", ", timestep.shape)}]");
        return t.to(device).expand(batch);
    }

    /// <summary>SDXL: add_embedding(concat(text_embeds, add_time_proj(time_ids) flattened per sample)).</summary>
    Tensor TextTimeEmbedding(UNetAddedConditions? added, long batch, ScalarType dtype)
    {
        const string what = "UNet2DConditionModel has addition_embed_type 'text_time' (SDXL) and needs added conditions";
        var textEmbeds = added?.TextEmbeds
            ?? throw new ArgumentException($"{what}: text_embeds (pooled text embedding, [batch, width]) is missing");
        var timeIds = added.TimeIds
            ?? throw new ArgumentException($"{what}: time_ids ([batch, 6]: original size, crop top-left, target size) is missing");
        long expected = Config.ProjectionClassEmbeddingsInputDim!.Value;
        long got = textEmbeds.shape[^1] + timeIds.numel() / batch * Config.AdditionTimeEmbedDim!.Value;
        if (textEmbeds.dim() != 2 || textEmbeds.shape[0] != batch || timeIds.numel() % batch != 0 || got != expected)
            throw new ArgumentException($"{what}: text_embeds [{string.Join(", ", textEmbeds.shape)}] " +
                                        $"and time_ids [{string.Join(", ", timeIds.shape)}] " +
                                        $"give {got} features for batch {batch}; projection_class_embeddings_input_dim is {expected}");
        var timeEmbeds = add_time_proj!.call(timeIds.flatten()).reshape(batch, -1);
        return add_embedding!.call(cat([textEmbeds, timeEmbeds.to(textEmbeds.dtype)], -1).to(dtype));
    }
}
