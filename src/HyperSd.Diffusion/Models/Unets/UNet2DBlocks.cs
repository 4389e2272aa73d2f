using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Unets;

/// <summary>A UNet down block: returns its output and the skip connections it adds (one per resnet, plus the
/// downsampled output).</summary>
public abstract class UNetDownBlock(string name) : nn.Module(name)
{
    public abstract (Tensor Hidden, IReadOnlyList<Tensor> ResSamples) forward(
        Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates);
}

/// <summary>A UNet up block: consumes <see cref="ResnetCount"/> skip connections, last first.</summary>
public abstract class UNetUpBlock(string name) : nn.Module(name)
{
    public abstract int ResnetCount { get; }

    /// <param name="upsampleSize">Explicit output size for the upsampler (inputs not a multiple of the UNet's
    /// total downsampling factor); null doubles.</param>
    public abstract Tensor forward(Tensor hiddenStates, IReadOnlyList<Tensor> resHiddenStates, Tensor? temb, Tensor? encoderHiddenStates,
        long[]? upsampleSize);
}

/// <summary>A UNet mid block.</summary>
public abstract class UNetMidBlock(string name) : nn.Module(name)
{
    public abstract Tensor forward(Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates);
}

/// <summary>Hyper-parameters shared by every block of one UNet (diffusers passes them to get_down_block /
/// get_up_block / get_mid_block).</summary>
public sealed record UNetBlockOptions(long TembChannels, double ResnetEps, string ResnetActFn, int ResnetGroups, double Dropout,
    bool UseLinearProjection, Device? Device, ScalarType? DType);

/// <summary>diffusers' get_down_block / get_mid_block / get_up_block for the block types Stable Diffusion uses.</summary>
public static class UNet2DBlocks
{
    public static readonly string[] DownBlockTypes = ["CrossAttnDownBlock2D", "DownBlock2D"];
    public static readonly string[] MidBlockTypes = ["UNetMidBlock2DCrossAttn", "UNetMidBlock2D"];
    public static readonly string[] UpBlockTypes = ["CrossAttnUpBlock2D", "UpBlock2D"];

    /// <summary>diffusers accepts the legacy "UNetRes" prefix (UNetResDownBlock2D = DownBlock2D).</summary>
    static string StripLegacyPrefix(string type) => type.StartsWith("UNetRes", StringComparison.Ordinal) ? type[7..] : type;

    public static void CheckType(string field, string? type, string[] allowed, bool nullable = false)
    {
        if (type is null ? nullable : allowed.Contains(StripLegacyPrefix(type))) return;
        throw new ArgumentException(
            $"config field '{field}' is {(type is null ? "null" : $"'{type}'")}; " +
            $"allowed values: {string.Join(", ", allowed)}{(nullable ? ", null" : "")}");
    }

    public static UNetDownBlock GetDownBlock(string type, int numLayers, int transformerLayers, long inChannels, long outChannels,
        bool addDownsample, int numAttentionHeads, long crossAttentionDim, int downsamplePadding, UNetBlockOptions o) =>
        StripLegacyPrefix(type) switch
        {
            "DownBlock2D" => new DownBlock2D(inChannels, outChannels, numLayers, addDownsample, downsamplePadding, o),
            "CrossAttnDownBlock2D" => new CrossAttnDownBlock2D(inChannels, outChannels, numLayers, transformerLayers, numAttentionHeads,
                crossAttentionDim, addDownsample, downsamplePadding, o),
            _ => throw new ArgumentException($"unknown down block type '{type}'; allowed values: {string.Join(", ", DownBlockTypes)}"),
        };

    public static UNetUpBlock GetUpBlock(string type, int numLayers, int transformerLayers, long inChannels, long outChannels,
        long prevOutputChannel, bool addUpsample, int numAttentionHeads, long crossAttentionDim, UNetBlockOptions o) =>
        StripLegacyPrefix(type) switch
        {
            "UpBlock2D" => new UpBlock2D(inChannels, prevOutputChannel, outChannels, numLayers, addUpsample, o),
            "CrossAttnUpBlock2D" => new CrossAttnUpBlock2D(inChannels, prevOutputChannel, outChannels, numLayers, transformerLayers,
                numAttentionHeads, crossAttentionDim, addUpsample, o),
            _ => throw new ArgumentException($"unknown up block type '{type}'; allowed values: {string.Join(", ", UpBlockTypes)}"),
        };

    public static UNetMidBlock? GetMidBlock(string? type, long inChannels, int transformerLayers, int numAttentionHeads,
        long crossAttentionDim, double outputScaleFactor, UNetBlockOptions o) => type switch
        {
            null => null,
            "UNetMidBlock2DCrossAttn" => new UNetMidBlock2DCrossAttn(inChannels, transformerLayers, numAttentionHeads, crossAttentionDim,
                outputScaleFactor, o),
            // as diffusers' get_mid_block: one resnet, no attention
            "UNetMidBlock2D" => new UNetMidBlock2D(inChannels, o.TembChannels, numLayers: 0, o.ResnetEps, o.ResnetActFn, o.ResnetGroups,
                addAttention: false, attentionHeadDim: 1, outputScaleFactor, o.Dropout, o.Device, o.DType),
            _ => throw new ArgumentException($"unknown mid block type '{type}'; allowed values: {string.Join(", ", MidBlockTypes)}, null"),
        };
}
