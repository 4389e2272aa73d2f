using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.TextEncoders;

/// <summary>The stack of encoder layers; returns every hidden state (the input, then each layer's output).</summary>
public sealed class CLIPEncoder : nn.Module<Tensor, IReadOnlyList<Tensor>>
{
    readonly ModuleList<CLIPEncoderLayer> layers = new();

    public CLIPEncoder(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(CLIPEncoder))
    {
        for (int i = 0; i < config.NumHiddenLayers; i++) layers.Add(new CLIPEncoderLayer(config, device, dtype));
        RegisterComponents();
    }

    public override IReadOnlyList<Tensor> forward(Tensor inputs_embeds)
    {
        var hidden = new List<Tensor> { inputs_embeds };
        foreach (var layer in layers) hidden.Add(layer.call(hidden[^1]));
        return hidden;
    }
}
