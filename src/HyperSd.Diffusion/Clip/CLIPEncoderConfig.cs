namespace HyperSd.Diffusion.Clip;

/// <summary>What the shared CLIP encoder stack reads from a tower's config (transformers types it
/// <c>Union[CLIPVisionConfig, CLIPTextConfig]</c>): both towers build the same layers from these fields.</summary>
public interface ICLIPEncoderConfig
{
    int HiddenSize { get; }
    int IntermediateSize { get; }
    int NumHiddenLayers { get; }
    int NumAttentionHeads { get; }
    string HiddenAct { get; }
    double LayerNormEps { get; }
}
