using System.Text.Json.Serialization;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models.Unets;

namespace HyperSd.Diffusion.Models.Autoencoders;

/// <summary>diffusers' AutoencoderKL config (config.json), with diffusers' defaults for omitted fields.</summary>
public sealed record AutoencoderKLConfig
{
    public static readonly string[] DownBlockTypeNames = ["DownEncoderBlock2D"];
    public static readonly string[] UpBlockTypeNames = ["UpDecoderBlock2D"];

    [JsonPropertyName("_class_name")] public string ClassName { get; init; } = "AutoencoderKL";
    [JsonPropertyName("_diffusers_version")] public string DiffusersVersion { get; init; } = "0.30.0";
    public int InChannels { get; init; } = 3;
    public int OutChannels { get; init; } = 3;
    public string[] DownBlockTypes { get; init; } = ["DownEncoderBlock2D"];
    public string[] UpBlockTypes { get; init; } = ["UpDecoderBlock2D"];
    public int[] BlockOutChannels { get; init; } = [64];
    public int LayersPerBlock { get; init; } = 1;
    public string ActFn { get; init; } = "silu";
    public int LatentChannels { get; init; } = 4;
    public int NormNumGroups { get; init; } = 32;
    public IntOrList? SampleSize { get; init; } = 32;
    /// <summary>Latents for the UNet are (z − shift_factor) · scaling_factor.</summary>
    public double ScalingFactor { get; init; } = 0.18215;
    public double? ShiftFactor { get; init; }
    public double[]? LatentsMean { get; init; }
    public double[]? LatentsStd { get; init; }
    public bool ForceUpcast { get; init; } = true;
    public bool UseQuantConv { get; init; } = true;
    public bool UsePostQuantConv { get; init; } = true;
    public bool MidBlockAddAttention { get; init; } = true;

    /// <summary>Throws naming the config field when the config is not one this port builds.</summary>
    public void Validate()
    {
        if (BlockOutChannels.Length == 0) throw new ArgumentException("config field 'block_out_channels' is empty");
        CheckBlocks("down_block_types", DownBlockTypes, DownBlockTypeNames);
        CheckBlocks("up_block_types", UpBlockTypes, UpBlockTypeNames);
    }

    void CheckBlocks(string field, string[] types, string[] allowed)
    {
        if (types.Length != BlockOutChannels.Length)
            throw new ArgumentException(
                $"config field '{field}' has {types.Length} entries, 'block_out_channels' has {BlockOutChannels.Length}; they must match");
        for (int i = 0; i < types.Length; i++) UNet2DBlocks.CheckType($"{field}[{i}]", types[i], allowed);
    }
}
