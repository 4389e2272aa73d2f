using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Clip;

/// <summary>A pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).</summary>
public sealed class CLIPEncoderLayer : nn.Module<Tensor, Tensor>
{
    readonly CLIPAttention self_attn;
    readonly LayerNorm layer_norm1;
    readonly CLIPMLP mlp;
    readonly LayerNorm layer_norm2;

    public CLIPEncoderLayer(ICLIPEncoderConfig config, bool causal, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPEncoderLayer))
    {
        self_attn = new CLIPAttention(config, causal, device, dtype);
        layer_norm1 = CLIPEncoder.LayerNorm(config, device, dtype);
        mlp = new CLIPMLP(config, device, dtype);
        layer_norm2 = CLIPEncoder.LayerNorm(config, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = NewDisposeScope();
        var h = hidden_states + self_attn.call(layer_norm1.call(hidden_states));
        return (h + mlp.call(layer_norm2.call(h))).MoveToOuterDisposeScope();
    }
}
