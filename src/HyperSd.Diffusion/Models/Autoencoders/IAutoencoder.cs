using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Autoencoders;

/// <summary>What pipelines and trainers need of an autoencoder: images in [0, 1] to the latents the UNet sees
/// (scaling and shift applied) and back.</summary>
public interface IAutoencoder
{
    int LatentChannels { get; }
    /// <summary>Spatial downsampling from image to latent.</summary>
    int ScaleFactor { get; }
    /// <summary>[N, 3, H, W] in [0, 1] → scaled latents (a posterior sample when the autoencoder has one).</summary>
    Tensor EncodeLatents(Tensor images, Generator? generator = null);
    /// <summary>Scaled latents → [N, 3, H, W] in [0, 1].</summary>
    Tensor DecodeLatents(Tensor latents);
    void SavePretrained(string dir);
}

public static class Autoencoders
{
    /// <summary>Loads the autoencoder class named by the folder's config.json (<c>_class_name</c>).</summary>
    public static IAutoencoder FromPretrained(string dir, Device? device = null, ScalarType? dtype = null)
    {
        var configPath = Path.Combine(dir, PretrainedModel.ConfigName);
        if (!File.Exists(configPath)) throw new FileNotFoundException($"autoencoder config not found: {configPath}", configPath);
        var name = JsonNode.Parse(File.ReadAllText(configPath))?["_class_name"]?.GetValue<string>() ?? nameof(AutoencoderKL);
        return name switch
        {
            nameof(AutoencoderKL) => AutoencoderKL.FromPretrained(dir, device, dtype),
            nameof(PixelUnshuffleAutoencoder) => PixelUnshuffleAutoencoder.FromPretrained(dir),
            _ => throw new InvalidDataException(
                $"{configPath}: _class_name '{name}' is not an autoencoder this project has; " +
                $"expected {nameof(AutoencoderKL)} or {nameof(PixelUnshuffleAutoencoder)}"),
        };
    }
}
