using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using HyperSd.Diffusion.IO;

namespace HyperSd.Diffusion.Models.Unets;

/// <summary>diffusers' UNet2DConditionModel config (config.json). Every field has diffusers' default, so configs
/// that omit fields read as diffusers reads them.</summary>
public sealed record UNet2DConditionConfig
{
    [JsonPropertyName("_class_name")] public string ClassName { get; init; } = "UNet2DConditionModel";
    [JsonPropertyName("_diffusers_version")] public string DiffusersVersion { get; init; } = "0.30.0";
    public IntOrList? SampleSize { get; init; }
    public int InChannels { get; init; } = 4;
    public int OutChannels { get; init; } = 4;
    public bool CenterInputSample { get; init; }
    public bool FlipSinToCos { get; init; } = true;
    public double FreqShift { get; init; }
    public string[] DownBlockTypes { get; init; } = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"];
    public string? MidBlockType { get; init; } = "UNetMidBlock2DCrossAttn";
    public string[] UpBlockTypes { get; init; } = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"];
    public bool OnlyCrossAttention { get; init; }
    public int[] BlockOutChannels { get; init; } = [320, 640, 1280, 1280];
    public IntOrList LayersPerBlock { get; init; } = 2;
    public int DownsamplePadding { get; init; } = 1;
    public double MidBlockScaleFactor { get; init; } = 1;
    public double Dropout { get; init; }
    public string ActFn { get; init; } = "silu";
    public int? NormNumGroups { get; init; } = 32;
    public double NormEps { get; init; } = 1e-5;
    public IntOrList CrossAttentionDim { get; init; } = 1280;
    public IntOrList TransformerLayersPerBlock { get; init; } = 1;
    public JsonNode? ReverseTransformerLayersPerBlock { get; init; }
    public int? EncoderHidDim { get; init; }
    public string? EncoderHidDimType { get; init; }
    /// <summary>Historically misnamed: when <see cref="NumAttentionHeads"/> is null this is the number of heads.</summary>
    public IntOrList AttentionHeadDim { get; init; } = 8;
    public IntOrList? NumAttentionHeads { get; init; }
    public bool DualCrossAttention { get; init; }
    public bool UseLinearProjection { get; init; }
    public string? ClassEmbedType { get; init; }
    public string? AdditionEmbedType { get; init; }
    public int? AdditionTimeEmbedDim { get; init; }
    public int? NumClassEmbeds { get; init; }
    /// <summary>Only changes precision in diffusers' non-SDPA processors; SDPA (used here, as by diffusers) ignores it.</summary>
    public bool UpcastAttention { get; init; }
    public string ResnetTimeScaleShift { get; init; } = "default";
    public bool ResnetSkipTimeAct { get; init; }
    public double ResnetOutScaleFactor { get; init; } = 1.0;
    public string TimeEmbeddingType { get; init; } = "positional";
    public int? TimeEmbeddingDim { get; init; }
    public string? TimeEmbeddingActFn { get; init; }
    public string? TimestepPostAct { get; init; }
    public int? TimeCondProjDim { get; init; }
    public int ConvInKernel { get; init; } = 3;
    public int ConvOutKernel { get; init; } = 3;
    public int? ProjectionClassEmbeddingsInputDim { get; init; }
    public string AttentionType { get; init; } = "default";
    public bool ClassEmbeddingsConcat { get; init; }
    public bool? MidBlockOnlyCrossAttention { get; init; }
    public string? CrossAttentionNorm { get; init; }
    public int AdditionEmbedTypeNumHeads { get; init; } = 64;

    public int BlockCount => DownBlockTypes.Length;

    /// <summary>Heads per down block; diffusers uses attention_head_dim when num_attention_heads is null.</summary>
    public int[] HeadsPerBlock => (NumAttentionHeads ?? AttentionHeadDim).Expand(BlockCount);

    /// <summary>Time-embedding width: time_embedding_dim, else 4 × block_out_channels[0].</summary>
    public int TimeEmbedDim => TimeEmbeddingDim ?? BlockOutChannels[0] * 4;

    /// <summary>Checks what diffusers checks plus what this port supports; throws naming the config field.</summary>
    public void Validate()
    {
        int n = BlockCount;
        if (n == 0) throw new ArgumentException("config field 'down_block_types' is empty");
        for (int i = 0; i < n; i++) UNet2DBlocks.CheckType($"down_block_types[{i}]", DownBlockTypes[i], UNet2DBlocks.DownBlockTypes);
        UNet2DBlocks.CheckType("mid_block_type", MidBlockType, UNet2DBlocks.MidBlockTypes, nullable: true);
        for (int i = 0; i < UpBlockTypes.Length; i++)
            UNet2DBlocks.CheckType($"up_block_types[{i}]", UpBlockTypes[i], UNet2DBlocks.UpBlockTypes);
        CheckCount("up_block_types", UpBlockTypes.Length);
        CheckCount("block_out_channels", BlockOutChannels.Length);
        foreach (var (field, value) in new[] { ("layers_per_block", LayersPerBlock), ("attention_head_dim", AttentionHeadDim),
                     ("num_attention_heads", NumAttentionHeads), ("cross_attention_dim", CrossAttentionDim),
                     ("transformer_layers_per_block", TransformerLayersPerBlock) })
            if (value is { IsList: true }) CheckCount(field, value.Values.Count);

        Require("addition_embed_type", AdditionEmbedType, v => v is null or "text_time", "null, text_time");
        if (AdditionEmbedType == "text_time" && (AdditionTimeEmbedDim is null || ProjectionClassEmbeddingsInputDim is null))
            throw new ArgumentException("config field 'addition_embed_type' is 'text_time', which needs 'addition_time_embed_dim' and " +
                                        "'projection_class_embeddings_input_dim' " +
                                        $"(got {Show(AdditionTimeEmbedDim)} and {Show(ProjectionClassEmbeddingsInputDim)})");
        Require("time_embedding_type", TimeEmbeddingType, v => v == "positional", "positional");
        Require("resnet_time_scale_shift", ResnetTimeScaleShift, v => v == "default", "default");
        Require("attention_type", AttentionType, v => v == "default", "default");
        Require("class_embed_type", ClassEmbedType, v => v is null, "null");
        Require("num_class_embeds", NumClassEmbeds, v => v is null, "null");
        Require("encoder_hid_dim", EncoderHidDim, v => v is null, "null");
        Require("encoder_hid_dim_type", EncoderHidDimType, v => v is null, "null");
        Require("time_cond_proj_dim", TimeCondProjDim, v => v is null, "null");
        Require("reverse_transformer_layers_per_block", ReverseTransformerLayersPerBlock, v => v is null, "null");
        Require("norm_num_groups", NormNumGroups, v => v is > 0, "a positive group count");
        Require("only_cross_attention", OnlyCrossAttention, v => !v, "false");
        Require("dual_cross_attention", DualCrossAttention, v => !v, "false");
    }

    void CheckCount(string field, int count)
    {
        if (count != BlockCount)
            throw new ArgumentException(
                $"config field '{field}' has {count} entries, 'down_block_types' has {BlockCount}; they must match");
    }

    static void Require<T>(string field, T value, Func<T, bool> supported, string allowed)
    {
        if (!supported(value))
            throw new ArgumentException($"config field '{field}' is {Show(value)}; this UNet supports: {allowed}");
    }

    static string Show(object? v) => v switch { null => "null", string s => $"'{s}'", bool b => b ? "true" : "false", _ => v.ToString()! };
}
