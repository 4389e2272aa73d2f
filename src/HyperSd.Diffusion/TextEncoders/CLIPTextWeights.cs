using HyperSd.Diffusion.Clip;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.TextEncoders;

/// <summary>transformers' on-disk text encoder folder (config.json + model.safetensors, or sharded), or the text tower of a
/// full CLIPModel folder: <see cref="CLIPPretrained"/> with the text tower.</summary>
internal static class CLIPTextWeights
{
    public static CLIPTextConfig ReadConfig(string dir) =>
        CLIPPretrained.ReadConfig<CLIPTextConfig>(dir, CLIPTower.Text).Validate(Path.Combine(dir, CLIPPretrained.ConfigName));

    public static void Load(nn.Module model, string dir) => CLIPPretrained.Load(model, dir, CLIPTower.Text);

    public static void Save(nn.Module model, CLIPTextConfig config, string dir) => CLIPPretrained.Save(model, config, dir);
}
