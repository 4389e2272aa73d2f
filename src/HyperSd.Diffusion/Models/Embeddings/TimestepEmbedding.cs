using HyperSd.Diffusion.Models.Activations;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Embeddings;

/// <summary>diffusers' TimestepEmbedding: linear_1 → act → linear_2 (→ post_act), projecting sinusoidal
/// timestep features (or any vector, e.g. SDXL's added conditions) to the time-embedding width.</summary>
public sealed class TimestepEmbedding : nn.Module<Tensor, Tensor>
{
    readonly Linear linear_1;
    readonly nn.Module<Tensor, Tensor> act;
    readonly Linear linear_2;
    readonly nn.Module<Tensor, Tensor>? post_act;

    public TimestepEmbedding(long inChannels, long timeEmbedDim, string actFn = "silu", long? outDim = null,
        string? postActFn = null, Device? device = null, ScalarType? dtype = null) : base(nameof(TimestepEmbedding))
    {
        linear_1 = nn.Linear(inChannels, timeEmbedDim, true, device, dtype);
        act = Activation.Get(actFn);
        linear_2 = nn.Linear(timeEmbedDim, outDim ?? timeEmbedDim, true, device, dtype);
        post_act = postActFn is null ? null : Activation.Get(postActFn, "timestep_post_act");
        RegisterComponents();
    }

    public override Tensor forward(Tensor sample)
    {
        using var scope = NewDisposeScope();
        var x = linear_2.call(act.call(linear_1.call(sample)));
        if (post_act is not null) x = post_act.call(x);
        return x.MoveToOuterDisposeScope();
    }
}
