using HyperSd.Diffusion.Models.Activations;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Resnets;

/// <summary>diffusers' ResnetBlock2D ("default" time-embedding norm, pre-norm): norm1 → act → conv1 (+ time_emb_proj(act(temb)))
/// → norm2 → act → dropout → conv2, plus the input (through a 1×1 conv_shortcut when the width changes),
/// divided by output_scale_factor.</summary>
public sealed class ResnetBlock2D : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly GroupNorm norm1;
    readonly Conv2d conv1;
    readonly Linear? time_emb_proj;
    readonly GroupNorm norm2;
    readonly Dropout dropout;
    readonly Conv2d conv2;
    readonly nn.Module<Tensor, Tensor> nonlinearity;
    readonly Conv2d? conv_shortcut;
    readonly double outputScaleFactor;

    /// <param name="tembChannels">Width of the time embedding; null for blocks without one (the VAE).</param>
    public ResnetBlock2D(long inChannels, long outChannels, long? tembChannels, int groups, double eps, double dropout = 0.0,
        string nonLinearity = "swish", double outputScaleFactor = 1.0, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ResnetBlock2D))
    {
        norm1 = Norms.GroupNorm(groups, inChannels, eps, device, dtype);
        conv1 = nn.Conv2d(inChannels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        if (tembChannels is { } t) time_emb_proj = nn.Linear(t, outChannels, true, device, dtype);
        norm2 = Norms.GroupNorm(groups, outChannels, eps, device, dtype);
        this.dropout = nn.Dropout(dropout);
        conv2 = nn.Conv2d(outChannels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        nonlinearity = Activation.Get(nonLinearity);
        if (inChannels != outChannels)
            conv_shortcut = nn.Conv2d(inChannels, outChannels, 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        this.outputScaleFactor = outputScaleFactor;
        RegisterComponents();
    }

    public override Tensor forward(Tensor input, Tensor? temb)
    {
        using var scope = NewDisposeScope();
        var h = conv1.call(nonlinearity.call(norm1.call(input)));
        if (time_emb_proj is not null && temb is not null)
            h = h + time_emb_proj.call(nonlinearity.call(temb)).unsqueeze(-1).unsqueeze(-1);
        h = conv2.call(dropout.call(nonlinearity.call(norm2.call(h))));
        var shortcut = conv_shortcut is null ? input : conv_shortcut.call(input);
        var output = shortcut + h;
        if (outputScaleFactor != 1.0) output = output / outputScaleFactor;
        return output.MoveToOuterDisposeScope();
    }
}
