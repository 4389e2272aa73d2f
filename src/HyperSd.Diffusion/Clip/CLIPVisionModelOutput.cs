using static TorchSharp.torch;

namespace HyperSd.Diffusion.Clip;

/// <summary>What the CLIP vision models return (transformers' BaseModelOutputWithPooling / CLIPVisionModelOutput).</summary>
/// <param name="LastHiddenState">[batch, 1 + patches, hidden]: the last encoder layer's output (no final norm, as in
/// transformers).</param>
/// <param name="PoolerOutput">[batch, hidden]: post_layernorm of the class token's last hidden state.</param>
/// <param name="HiddenStates">The encoder input (embeddings after pre_layrnorm), then each layer's output.</param>
/// <param name="ImageEmbeds">[batch, projection_dim]: the projected pooled output (CLIPVisionModelWithProjection only).</param>
public sealed record CLIPVisionModelOutput(Tensor LastHiddenState, Tensor PoolerOutput, IReadOnlyList<Tensor> HiddenStates,
    Tensor? ImageEmbeds = null) : IDisposable
{
    public void Dispose()
    {
        // LastHiddenState is HiddenStates[^1]: dispose each handle once (Tensor.Equals reads the handle, so compare references)
        var tensors = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var t in HiddenStates.Append(LastHiddenState).Append(PoolerOutput).Append(ImageEmbeds))
            if (t is not null) tensors.Add(t);
        foreach (var t in tensors) t.Dispose();
    }
}
