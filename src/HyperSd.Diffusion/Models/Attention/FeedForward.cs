using HyperSd.Diffusion.Models.Activations;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Attention;

/// <summary>diffusers' FeedForward with the GEGLU activation (the one Stable Diffusion uses):
/// net = [GEGLU(dim → inner), Dropout, Linear(inner → dim_out)].</summary>
public sealed class FeedForward : nn.Module<Tensor, Tensor>
{
    readonly ModuleList<nn.Module<Tensor, Tensor>> net;

    public FeedForward(long dim, long? dimOut = null, int mult = 4, double dropout = 0.0, long? innerDim = null, bool bias = true,
        Device? device = null, ScalarType? dtype = null) : base(nameof(FeedForward))
    {
        long inner = innerDim ?? dim * mult;
        net = nn.ModuleList<nn.Module<Tensor, Tensor>>(
            new GEGLU(dim, inner, bias, device, dtype), nn.Dropout(dropout), nn.Linear(inner, dimOut ?? dim, bias, device, dtype));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        var x = hiddenStates;
        foreach (var layer in net) x = layer.call(x);
        return x.MoveToOuterDisposeScope();
    }
}
