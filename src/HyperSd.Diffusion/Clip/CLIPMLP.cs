using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Clip;

/// <summary>The transformer feed-forward: fc1 → activation (config.hidden_act) → fc2.</summary>
public sealed class CLIPMLP : nn.Module<Tensor, Tensor>
{
    readonly Linear fc1;
    readonly Linear fc2;
    readonly Func<Tensor, Tensor> activation;

    public CLIPMLP(ICLIPEncoderConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(CLIPMLP))
    {
        activation = Activation(config.HiddenAct, config.GetType().Name);
        fc1 = nn.Linear(config.HiddenSize, config.IntermediateSize, device: device, dtype: dtype);
        fc2 = nn.Linear(config.IntermediateSize, config.HiddenSize, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states)
    {
        using var h = fc1.call(hidden_states);
        using var a = activation(h);
        return fc2.call(a);
    }

    /// <summary>transformers' ACT2FN entries that CLIP checkpoints use.</summary>
    public static Func<Tensor, Tensor> Activation(string name, string source) => name switch
    {
        // OpenAI CLIP's fast approximation (SD1.x text encoder)
        "quick_gelu" => x => { using var s = (x * 1.702).sigmoid(); return x * s; },
        "gelu" => x => nn.functional.gelu(x),
        "gelu_new" or "gelu_pytorch_tanh" => x => nn.functional.gelu(x, GELU.Approximate.tanh),
        _ => throw new InvalidDataException(
            $"{source}: hidden_act '{name}' is not supported (expected quick_gelu, gelu, gelu_new or gelu_pytorch_tanh)"),

    };
}
