using static TorchSharp.torch;

namespace HyperSd.Diffusion.TextEncoders;

/// <summary>
/// What the CLIP text encoders return (transformers' BaseModelOutputWithPooling / CLIPTextModelOutput).
/// </summary>
/// <param name="LastHiddenState">[batch, tokens, hidden] after the final layer norm (SD1.x conditioning).</param>
/// <param name="PoolerOutput">[batch, hidden]: the last hidden state at the first eos token.</param>
/// <param name="HiddenStates">The embeddings, then each layer's output, before the final norm: [^2] is the penultimate
/// layer that "clip skip" and SDXL use.</param>
/// <param name="TextEmbeds">[batch, projection_dim]: the projected pooled output (CLIPTextModelWithProjection only).</param>
public sealed record CLIPTextModelOutput(Tensor LastHiddenState, Tensor PoolerOutput, IReadOnlyList<Tensor> HiddenStates,
    Tensor? TextEmbeds = null) : IDisposable
{
    public Tensor PenultimateHiddenState => HiddenStates[^2];

    public void Dispose()
    {
        foreach (var t in HiddenStates.Append(LastHiddenState).Append(PoolerOutput).Append(TextEmbeds).Distinct()) t?.Dispose();
    }
}
