using HyperSd.Diffusion.Models.Activations;
using HyperSd.Diffusion.Models.Unets;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Autoencoders;

/// <summary>diffusers' VAE Encoder: conv_in, DownEncoderBlock2Ds (downsampling with asymmetric padding),
/// UNetMidBlock2D with attention, GroupNorm, act, conv_out to 2·latent channels (mean and log-variance).</summary>
public sealed class Encoder : nn.Module<Tensor, Tensor>
{
    readonly Conv2d conv_in;
    readonly ModuleList<DownEncoderBlock2D> down_blocks;
    readonly UNetMidBlock2D mid_block;
    readonly GroupNorm conv_norm_out;
    readonly nn.Module<Tensor, Tensor> conv_act;
    readonly Conv2d conv_out;

    public Encoder(int inChannels, int outChannels, int[] blockOutChannels, int layersPerBlock, int normNumGroups, string actFn,
        bool doubleZ = true, bool midBlockAddAttention = true, Device? device = null, ScalarType? dtype = null) : base(nameof(Encoder))
    {
        int n = blockOutChannels.Length;
        conv_in = nn.Conv2d(inChannels, blockOutChannels[0], 3, stride: 1, padding: 1, device: device, dtype: dtype);
        down_blocks = nn.ModuleList(Enumerable.Range(0, n).Select(i => new DownEncoderBlock2D(blockOutChannels[Math.Max(i - 1, 0)],
            blockOutChannels[i], layersPerBlock, addDownsample: i < n - 1, downsamplePadding: 0, 1e-6, actFn, normNumGroups,
            device: device, dtype: dtype)).ToArray());
        mid_block = new UNetMidBlock2D(blockOutChannels[^1], null, 1, 1e-6, actFn, normNumGroups, midBlockAddAttention,
            attentionHeadDim: blockOutChannels[^1], device: device, dtype: dtype);
        conv_norm_out = Norms.GroupNorm(normNumGroups, blockOutChannels[^1], 1e-6, device, dtype);
        conv_act = nn.SiLU();
        conv_out = nn.Conv2d(
            blockOutChannels[^1], doubleZ ? 2 * outChannels : outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor sample)
    {
        using var scope = NewDisposeScope();
        var x = conv_in.call(sample);
        foreach (var block in down_blocks) x = block.call(x);
        x = mid_block.forward(x);
        return conv_out.call(conv_act.call(conv_norm_out.call(x))).MoveToOuterDisposeScope();
    }
}
