using System.Text.Json.Serialization;

namespace HyperSd.Diffusion.Clip;

/// <summary>transformers' <c>CLIPVisionConfig</c> (a vision model's config.json, or the <c>vision_config</c> section of
/// a full CLIPModel's); defaults are transformers' own (ViT-B/32).</summary>
public sealed record CLIPVisionConfig : ICLIPEncoderConfig
{
    public int HiddenSize { get; init; } = 768;
    public int IntermediateSize { get; init; } = 3072;
    public int ProjectionDim { get; init; } = 512;
    public int NumHiddenLayers { get; init; } = 12;
    public int NumAttentionHeads { get; init; } = 12;
    public int NumChannels { get; init; } = 3;
    public int ImageSize { get; init; } = 224;
    public int PatchSize { get; init; } = 32;
    public string HiddenAct { get; init; } = "quick_gelu";
    public double LayerNormEps { get; init; } = 1e-5;

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<string>? Architectures { get; init; }

    public string ModelType { get; init; } = "clip_vision_model";

    /// <summary>Patches per side: the patch convolution's stride is the patch size.</summary>
    public int PatchesPerSide => ImageSize / PatchSize;

    /// <summary>Throws, naming the field, when the sizes cannot build a model.</summary>
    public CLIPVisionConfig Validate(string source)
    {
        if (HiddenSize <= 0 || NumAttentionHeads <= 0 || HiddenSize % NumAttentionHeads != 0)
            throw new InvalidDataException(
                $"{source}: hidden_size {HiddenSize} must be a positive multiple of num_attention_heads {NumAttentionHeads}");

        foreach (var (name, value) in new[] { ("intermediate_size", IntermediateSize), ("num_hidden_layers", NumHiddenLayers),
                     ("projection_dim", ProjectionDim), ("num_channels", NumChannels), ("patch_size", PatchSize) })
            if (value <= 0) throw new InvalidDataException($"{source}: {name} must be positive, got {value}");
        if (ImageSize < PatchSize)
            throw new InvalidDataException($"{source}: image_size {ImageSize} is smaller than patch_size {PatchSize}");
        CLIPMLP.Activation(HiddenAct, source);
        return this;
    }
}
