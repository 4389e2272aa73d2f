using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Attention;

/// <summary>diffusers' Attention with the default SDPA processor (AttnProcessor2_0): to_q/to_k/to_v, multi-head
/// scaled dot-product attention, to_out = [Linear, Dropout]. Self-attention when no encoder states are given.
/// The VAE's mid-block form adds group_norm on the input, a residual connection and rescale_output_factor,
/// and accepts (batch, channels, height, width) input.</summary>
public sealed class Attention : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly GroupNorm? group_norm;
    readonly Linear to_q;
    readonly Linear to_k;
    readonly Linear to_v;
    readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;
    readonly long heads;
    readonly bool residualConnection;
    readonly double rescaleOutputFactor;

    /// <param name="crossAttentionDim">Width of the encoder states; null means self-attention (query width).</param>
    /// <param name="normNumGroups">Adds a GroupNorm on the input (VAE mid-block attention).</param>
    public Attention(long queryDim, long? crossAttentionDim = null, long heads = 8, long dimHead = 64, double dropout = 0.0,
        bool bias = false, bool outBias = true, int? normNumGroups = null, double eps = 1e-5, bool residualConnection = false,
        double rescaleOutputFactor = 1.0, Device? device = null, ScalarType? dtype = null) : base(nameof(Attention))
    {
        long innerDim = dimHead * heads;
        this.heads = heads;
        this.residualConnection = residualConnection;
        this.rescaleOutputFactor = rescaleOutputFactor;
        if (normNumGroups is { } groups) group_norm = Norms.GroupNorm(groups, queryDim, eps, device, dtype);
        to_q = nn.Linear(queryDim, innerDim, bias, device, dtype);
        to_k = nn.Linear(crossAttentionDim ?? queryDim, innerDim, bias, device, dtype);
        to_v = nn.Linear(crossAttentionDim ?? queryDim, innerDim, bias, device, dtype);
        to_out = nn.ModuleList<nn.Module<Tensor, Tensor>>(nn.Linear(innerDim, queryDim, outBias, device, dtype), nn.Dropout(dropout));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        var residual = hiddenStates;
        var shape4 = hiddenStates.dim() == 4 ? hiddenStates.shape : null;
        var x = shape4 is null ? hiddenStates : hiddenStates.flatten(2).transpose(1, 2);
        if (group_norm is not null) x = group_norm.call(x.transpose(1, 2)).transpose(1, 2);

        var context = encoderHiddenStates ?? x;
        long batch = x.shape[0];
        var q = SplitHeads(to_q.call(x), batch);
        var k = SplitHeads(to_k.call(context), batch);
        var v = SplitHeads(to_v.call(context), batch);
        var attended = nn.functional.scaled_dot_product_attention(q, k, v);
        var output = attended.transpose(1, 2).reshape(batch, -1, attended.shape[1] * attended.shape[3]);
        foreach (var layer in to_out) output = layer.call(output);

        if (shape4 is not null) output = output.transpose(-1, -2).reshape(shape4);
        if (residualConnection) output = output + residual;
        if (rescaleOutputFactor != 1.0) output = output / rescaleOutputFactor;
        return output.MoveToOuterDisposeScope();
    }

    Tensor SplitHeads(Tensor t, long batch) => t.view(batch, -1, heads, t.shape[^1] / heads).transpose(1, 2);
}
