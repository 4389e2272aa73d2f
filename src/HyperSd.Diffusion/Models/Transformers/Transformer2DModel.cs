using HyperSd.Diffusion.Models.Attention;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Transformers;

/// <summary>diffusers' Transformer2DModel for continuous (latent image) input: GroupNorm (eps 1e-6), proj_in
/// (1×1 conv, or Linear after flattening when use_linear_projection), transformer_blocks, proj_out, plus the input.</summary>
public sealed class Transformer2DModel : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly GroupNorm norm;
    readonly nn.Module<Tensor, Tensor> proj_in;
    readonly ModuleList<BasicTransformerBlock> transformer_blocks;
    readonly nn.Module<Tensor, Tensor> proj_out;
    readonly bool useLinearProjection;

    public Transformer2DModel(long numAttentionHeads, long attentionHeadDim, long inChannels, int numLayers, long crossAttentionDim,
        int normNumGroups, bool useLinearProjection, double dropout = 0.0, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Transformer2DModel))
    {
        long innerDim = numAttentionHeads * attentionHeadDim;
        this.useLinearProjection = useLinearProjection;
        norm = Norms.GroupNorm(normNumGroups, inChannels, 1e-6, device, dtype);
        proj_in = useLinearProjection
            ? nn.Linear(inChannels, innerDim, true, device, dtype)
            : nn.Conv2d(inChannels, innerDim, 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        transformer_blocks = nn.ModuleList(Enumerable.Range(0, numLayers)
            .Select(_ => new BasicTransformerBlock(
                innerDim, numAttentionHeads, attentionHeadDim, crossAttentionDim, dropout, device: device, dtype: dtype))
            .ToArray());
        proj_out = useLinearProjection
            ? nn.Linear(innerDim, inChannels, true, device, dtype)
            : nn.Conv2d(innerDim, inChannels, 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hiddenStates, Tensor? encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        long batch = hiddenStates.shape[0], height = hiddenStates.shape[2], width = hiddenStates.shape[3];
        var x = norm.call(hiddenStates);
        // tokens = pixels: (batch, h·w, inner); the projection happens before or after flattening
        if (useLinearProjection) x = proj_in.call(ToTokens(x));
        else x = ToTokens(proj_in.call(x));
        foreach (var block in transformer_blocks) x = block.call(x, encoderHiddenStates);
        x = useLinearProjection
            ? ToImage(proj_out.call(x), batch, height, width)
            : proj_out.call(ToImage(x, batch, height, width));
        return (x + hiddenStates).MoveToOuterDisposeScope();
    }

    static Tensor ToTokens(Tensor x) => x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2] * x.shape[3], x.shape[1]);

    static Tensor ToImage(Tensor x, long batch, long height, long width) =>
        x.reshape(batch, height, width, x.shape[^1]).permute(0, 3, 1, 2).contiguous();
}
