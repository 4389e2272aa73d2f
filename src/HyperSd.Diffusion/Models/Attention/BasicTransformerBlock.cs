using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Attention;

/// <summary>diffusers' BasicTransformerBlock (layer_norm, GEGLU): self-attention, cross-attention on the encoder
/// states, feed-forward, each pre-normalised and residual.</summary>
public sealed class BasicTransformerBlock : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly LayerNorm norm1;
    readonly Attention attn1;
    readonly LayerNorm norm2;
    readonly Attention attn2;
    readonly LayerNorm norm3;
    readonly FeedForward ff;

    public BasicTransformerBlock(long dim, long numAttentionHeads, long attentionHeadDim, long crossAttentionDim, double dropout = 0.0,
        bool attentionBias = false, double normEps = 1e-5, Device? device = null, ScalarType? dtype = null)
        : base(nameof(BasicTransformerBlock))
    {
        norm1 = Norms.LayerNorm(dim, normEps, device, dtype);
        attn1 = new Attention(dim, null, numAttentionHeads, attentionHeadDim, dropout, attentionBias, device: device, dtype: dtype);
        norm2 = Norms.LayerNorm(dim, normEps, device, dtype);
        attn2 = new Attention(
            dim, crossAttentionDim, numAttentionHeads, attentionHeadDim, dropout, attentionBias, device: device, dtype: dtype);
        norm3 = Norms.LayerNorm(dim, normEps, device, dtype);
        ff = new FeedForward(dim, dropout: dropout, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="encoderHiddenStates">The text conditioning; null makes attn2 attend to the hidden states.</param>
    public override Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        var x = attn1.call(norm1.call(hiddenStates), null) + hiddenStates;
        x = attn2.call(norm2.call(x), encoderHiddenStates) + x;
        x = ff.call(norm3.call(x)) + x;
        return x.MoveToOuterDisposeScope();
    }
}
