using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Clip;

/// <summary>Multi-head self-attention. The text tower is causal (each token sees itself and the tokens before it);
/// the vision tower attends over all patches.</summary>
public sealed class CLIPAttention : nn.Module<Tensor, Tensor>
{
    readonly Linear k_proj;
    readonly Linear v_proj;
    readonly Linear q_proj;
    readonly Linear out_proj;
    readonly int heads;
    readonly bool causal;

    public CLIPAttention(ICLIPEncoderConfig config, bool causal, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPAttention))

    {
        int width = config.HiddenSize;
        heads = config.NumAttentionHeads;
        this.causal = causal;
        k_proj = nn.Linear(width, width, device: device, dtype: dtype);
        v_proj = nn.Linear(width, width, device: device, dtype: dtype);
        q_proj = nn.Linear(width, width, device: device, dtype: dtype);
        out_proj = nn.Linear(width, width, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = NewDisposeScope();
        long batch = hidden_states.shape[0], length = hidden_states.shape[1], width = hidden_states.shape[2];
        Tensor Heads(Linear proj) => proj.call(hidden_states).view(batch, length, heads, -1).transpose(1, 2);
        // the default scale 1/sqrt(head_dim) is CLIP's
        var attended = nn.functional.scaled_dot_product_attention(Heads(q_proj), Heads(k_proj), Heads(v_proj), is_casual: causal);
        return out_proj.call(attended.transpose(1, 2).reshape(batch, length, width)).MoveToOuterDisposeScope();
    }
}
