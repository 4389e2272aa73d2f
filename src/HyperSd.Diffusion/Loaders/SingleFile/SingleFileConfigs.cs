using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.TextEncoders;

namespace HyperSd.Diffusion.Loaders.SingleFile;

/// <summary>The component configs a single-file checkpoint is read with: a single file carries weights only, so the
/// architecture comes from here (as diffusers' from_single_file takes it from the original model's configs).</summary>
public sealed record SingleFileConfigs(UNet2DConditionConfig Unet, AutoencoderKLConfig Vae, CLIPTextConfig TextEncoder)
{
    /// <summary>Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5's unet, vae and text_encoder configs).</summary>
    public static SingleFileConfigs StableDiffusion15 { get; } = new(
        new UNet2DConditionConfig
        {
            SampleSize = 64,
            InChannels = 4,
            OutChannels = 4,
            DownBlockTypes = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            MidBlockType = "UNetMidBlock2DCrossAttn",
            UpBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            BlockOutChannels = [320, 640, 1280, 1280],
            LayersPerBlock = 2,
            AttentionHeadDim = 8,
            CrossAttentionDim = 768,
            NormNumGroups = 32,
            NormEps = 1e-5,
        },
        new AutoencoderKLConfig
        {
            InChannels = 3,
            OutChannels = 3,
            DownBlockTypes = ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            UpBlockTypes = ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
            BlockOutChannels = [128, 256, 512, 512],
            LayersPerBlock = 2,
            LatentChannels = 4,
            NormNumGroups = 32,
            SampleSize = 512,
            ScalingFactor = 0.18215,
        },
        new CLIPTextConfig
        {
            VocabSize = 49408,
            HiddenSize = 768,
            IntermediateSize = 3072,
            ProjectionDim = 768,
            NumHiddenLayers = 12,
            NumAttentionHeads = 12,
            MaxPositionEmbeddings = 77,
            HiddenAct = "quick_gelu",
            PadTokenId = 1,
            BosTokenId = 49406,
            EosTokenId = 49407,
            Architectures = [nameof(CLIPTextModel)],
        });

    /// <summary>Reads the configs of a diffusers pipeline folder: <c>unet/</c>, <c>vae/</c> and <c>text_encoder/config.json</c>.</summary>
    public static SingleFileConfigs FromPretrained(string dir) => new(
        ModelConfig.Read<UNet2DConditionConfig>(Path.Combine(dir, "unet", PretrainedModel.ConfigName)),
        ModelConfig.Read<AutoencoderKLConfig>(Path.Combine(dir, "vae", PretrainedModel.ConfigName)),
        CLIPTextWeights.ReadConfig(Path.Combine(dir, "text_encoder")));

    /// <summary>The key map for these architectures.</summary>
    public SingleFileKeyMap KeyMap() => SingleFileKeyMap.FromConfigs(Unet, Vae, TextEncoder);
}
