using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Clip;

/// <summary>The stack of encoder layers shared by the text and vision towers; returns every hidden state (the input,
/// then each layer's output).</summary>
public sealed class CLIPEncoder : nn.Module<Tensor, IReadOnlyList<Tensor>>
{
    readonly ModuleList<CLIPEncoderLayer> layers = new();

    /// <param name="causal">True for the text tower (causal mask), false for the vision tower.</param>
    public CLIPEncoder(ICLIPEncoderConfig config, bool causal, Device? device = null, ScalarType? dtype = null) : base(nameof(CLIPEncoder))
    {
        for (int i = 0; i < config.NumHiddenLayers; i++) layers.Add(new CLIPEncoderLayer(config, causal, device, dtype));
        RegisterComponents();
    }

    public override IReadOnlyList<Tensor> forward(Tensor inputs_embeds)
    {
        var hidden = new List<Tensor> { inputs_embeds };
        foreach (var layer in layers) hidden.Add(layer.call(hidden[^1]));
        return hidden;
    }

    /// <summary>A LayerNorm over hidden_size with explicit identity initialisation (the towers' norms).</summary>
    public static LayerNorm LayerNorm(ICLIPEncoderConfig config, Device? device, ScalarType? dtype)
    {
        var norm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        using var _ = no_grad();
        norm.weight!.fill_(1);
        norm.bias!.zero_();
        return norm;
    }
}
