using HyperSd.Diffusion.Models.Unets;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Autoencoders;

/// <summary>diffusers' VAE Decoder (group norm): conv_in, UNetMidBlock2D with attention, UpDecoderBlock2Ds
/// (layers_per_block + 1 resnets each), GroupNorm, act, conv_out.</summary>
public sealed class Decoder : nn.Module<Tensor, Tensor>
{
    readonly Conv2d conv_in;
    readonly UNetMidBlock2D mid_block;
    readonly ModuleList<UpDecoderBlock2D> up_blocks;
    readonly GroupNorm conv_norm_out;
    readonly nn.Module<Tensor, Tensor> conv_act;
    readonly Conv2d conv_out;

    public Decoder(int inChannels, int outChannels, int[] blockOutChannels, int layersPerBlock, int normNumGroups, string actFn,
        bool midBlockAddAttention = true, Device? device = null, ScalarType? dtype = null) : base(nameof(Decoder))
    {
        int n = blockOutChannels.Length;
        var reversed = blockOutChannels.Reverse().ToArray();
        conv_in = nn.Conv2d(inChannels, reversed[0], 3, stride: 1, padding: 1, device: device, dtype: dtype);
        mid_block = new UNetMidBlock2D(reversed[0], null, 1, 1e-6, actFn, normNumGroups, midBlockAddAttention,
            attentionHeadDim: reversed[0], device: device, dtype: dtype);
        up_blocks = nn.ModuleList(Enumerable.Range(0, n).Select(i => new UpDecoderBlock2D(reversed[Math.Max(i - 1, 0)], reversed[i],
            layersPerBlock + 1, addUpsample: i < n - 1, 1e-6, actFn, normNumGroups, device: device, dtype: dtype)).ToArray());
        conv_norm_out = Norms.GroupNorm(normNumGroups, blockOutChannels[0], 1e-6, device, dtype);
        conv_act = nn.SiLU();
        conv_out = nn.Conv2d(blockOutChannels[0], outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor sample)
    {
        using var scope = NewDisposeScope();
        var x = mid_block.forward(conv_in.call(sample));
        foreach (var block in up_blocks) x = block.call(x);
        return conv_out.call(conv_act.call(conv_norm_out.call(x))).MoveToOuterDisposeScope();
    }
}
