using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Activations;

/// <summary>diffusers' <c>get_activation</c>: the activation a config names (<c>act_fn</c> and friends).</summary>
public static class Activation
{
    public static readonly string[] Names = ["swish", "silu", "mish", "gelu", "relu"];

    public static nn.Module<Tensor, Tensor> Get(string name, string field = "act_fn") => name.ToLowerInvariant() switch
    {
        "swish" or "silu" => nn.SiLU(),
        "mish" => nn.Mish(),
        "gelu" => nn.GELU(),
        "relu" => nn.ReLU(),
        _ => throw new ArgumentException($"config field '{field}' is '{name}'; allowed values: {string.Join(", ", Names)}"),
    };
}
