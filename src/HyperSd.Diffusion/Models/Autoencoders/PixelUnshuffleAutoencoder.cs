using HyperSd.Diffusion.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Autoencoders;

public sealed record PixelUnshuffleAutoencoderConfig
{
    [System.Text.Json.Serialization.JsonPropertyName("_class_name")]
    public string ClassName { get; init; } = nameof(PixelUnshuffleAutoencoder);
    public int InChannels { get; init; } = 3;
    /// <summary>Each factor × factor patch of pixels becomes one latent pixel with in_channels · factor² channels.</summary>
    public int Factor { get; init; } = 4;
    /// <summary>As diffusers' VAEs: latents = (pixels in [−1, 1] − shift_factor) · scaling_factor, so that data whose
    /// pixels are mostly one value (a black background) still has latents of roughly unit scale for the noise schedule.</summary>
    public double ScalingFactor { get; init; } = 1.0;
    public double ShiftFactor { get; init; }
}

/// <summary>
/// An exact, parameter-free autoencoder: pixels in [−1, 1] rearranged into channels (pixel unshuffle) and back.
/// The toy world uses it so that distillation results measure the UNet alone, with no VAE error and no VAE to train.
/// </summary>
public sealed class PixelUnshuffleAutoencoder(PixelUnshuffleAutoencoderConfig config)
    : nn.Module(nameof(PixelUnshuffleAutoencoder)), IAutoencoder
{
    public PixelUnshuffleAutoencoderConfig Config { get; } = config.Factor >= 1 ? config
        : throw new ArgumentException($"factor must be at least 1, got {config.Factor}");

    public int LatentChannels => Config.InChannels * Config.Factor * Config.Factor;
    public int ScaleFactor => Config.Factor;

    public Tensor EncodeLatents(Tensor images, Generator? generator = null) =>
        (nn.functional.pixel_unshuffle(images * 2 - 1, Config.Factor) - Config.ShiftFactor) * Config.ScalingFactor;

    public Tensor DecodeLatents(Tensor latents) =>
        (nn.functional.pixel_shuffle(latents / Config.ScalingFactor + Config.ShiftFactor, Config.Factor) / 2 + 0.5).clamp(0, 1);

    public static PixelUnshuffleAutoencoder FromPretrained(string dir) =>
        new(ModelConfig.Read<PixelUnshuffleAutoencoderConfig>(Path.Combine(dir, PretrainedModel.ConfigName)));

    public void SavePretrained(string dir) => ModelConfig.Write(Path.Combine(dir, PretrainedModel.ConfigName), Config);
}
