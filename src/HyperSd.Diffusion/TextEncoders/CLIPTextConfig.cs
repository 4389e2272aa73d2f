using System.Text.Json.Serialization;
using HyperSd.Diffusion.Clip;

namespace HyperSd.Diffusion.TextEncoders;

/// <summary>transformers' <c>CLIPTextConfig</c> (text_encoder/config.json); defaults are transformers' own.</summary>
public sealed record CLIPTextConfig : ICLIPEncoderConfig
{
    public int VocabSize { get; init; } = 49408;
    public int HiddenSize { get; init; } = 512;
    public int IntermediateSize { get; init; } = 2048;
    public int ProjectionDim { get; init; } = 512;
    public int NumHiddenLayers { get; init; } = 12;
    public int NumAttentionHeads { get; init; } = 8;
    public int MaxPositionEmbeddings { get; init; } = 77;
    public string HiddenAct { get; init; } = "quick_gelu";
    public double LayerNormEps { get; init; } = 1e-5;
    public int PadTokenId { get; init; } = 1;
    public int BosTokenId { get; init; } = 49406;
    public int EosTokenId { get; init; } = 49407;

    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<string>? Architectures { get; init; }

    public string ModelType { get; init; } = "clip_text_model";

    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>Throws, naming the field, when the sizes cannot build a model.</summary>
    public CLIPTextConfig Validate(string source)
    {
        if (HiddenSize <= 0 || NumAttentionHeads <= 0 || HiddenSize % NumAttentionHeads != 0)
            throw new InvalidDataException(
                $"{source}: hidden_size {HiddenSize} must be a positive multiple of num_attention_heads {NumAttentionHeads}");
        foreach (var (name, value) in new[] { ("vocab_size", VocabSize), ("intermediate_size", IntermediateSize),
                     ("num_hidden_layers", NumHiddenLayers), ("max_position_embeddings", MaxPositionEmbeddings),
                     ("projection_dim", ProjectionDim) })
            if (value <= 0) throw new InvalidDataException($"{source}: {name} must be positive, got {value}");
        CLIPMLP.Activation(HiddenAct, source);
        return this;
    }
}
