using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Activations;

/// <summary>diffusers' GEGLU: one projection to twice the width, split into value and gate, value · gelu(gate).</summary>
public sealed class GEGLU : nn.Module<Tensor, Tensor>
{
    readonly Linear proj;

    public GEGLU(long dimIn, long dimOut, bool bias = true, Device? device = null, ScalarType? dtype = null) : base(nameof(GEGLU))
    {
        proj = nn.Linear(dimIn, dimOut * 2, bias, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates)
    {
        using var scope = NewDisposeScope();
        var halves = proj.call(hiddenStates).chunk(2, -1);
        return (halves[0] * nn.functional.gelu(halves[1])).MoveToOuterDisposeScope();
    }
}
