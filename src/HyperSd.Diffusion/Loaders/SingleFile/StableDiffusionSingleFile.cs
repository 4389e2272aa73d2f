using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Loaders.SingleFile;

/// <summary>
/// The UNet, VAE and text encoder of one single-file Stable Diffusion 1.x checkpoint in the original (CompVis/ldm)
/// layout, as diffusers' <c>StableDiffusionPipeline.from_single_file</c> loads them; and the inverse export.
/// Only safetensors files are read: pickle checkpoints (.ckpt) are refused.
/// </summary>
public sealed class StableDiffusionSingleFile(UNet2DConditionModel unet, AutoencoderKL vae, CLIPTextModel textEncoder) : IDisposable
{
    public UNet2DConditionModel Unet { get; } = unet;
    public AutoencoderKL Vae { get; } = vae;
    public CLIPTextModel TextEncoder { get; } = textEncoder;

    /// <summary>Loads the three components (eval mode) from <paramref name="path"/>.</summary>
    /// <param name="configs">The architectures; default <see cref="SingleFileConfigs.StableDiffusion15"/>.</param>
    public static StableDiffusionSingleFile Load(
        string path, SingleFileConfigs? configs = null, Device? device = null, ScalarType? dtype = null)
    {
        configs ??= SingleFileConfigs.StableDiffusion15;
        var map = configs.KeyMap();
        var checkpoint = SafeTensors.Load(path);
        var built = new List<nn.Module>();
        IReadOnlyDictionary<Component, Dictionary<string, Tensor>>? parts = null;
        try
        {
            parts = map.Split(checkpoint, path);
            // Errors name the model's key; the source names the key the file stores it under.
            var origin = checkpoint.Keys.Select(k => (Key: k, Target: map.Map(k))).Where(x => x.Target is not null)
                .ToDictionary(x => (x.Target!.Component, x.Target.DiffusersKey), x => x.Key);
            WeightSource Source(Component c) =>
                new(path, parts[c].Keys.ToDictionary(k => k, k => $"{path} (stored as '{origin[(c, k)]}')"));

            T Build<T>(T model, Component component) where T : nn.Module
            {
                built.Add(model);
                StateDict.Load(model, parts[component], Source(component));
                model.eval();
                return model;
            }
            return new(Build(new UNet2DConditionModel(configs.Unet, device, dtype), Component.Unet),
                Build(new AutoencoderKL(configs.Vae, device, dtype), Component.Vae),
                Build(new CLIPTextModel(configs.TextEncoder, device, dtype), Component.TextEncoder));
        }
        catch
        {
            foreach (var model in built) model.Dispose();
            throw;
        }
        finally
        {
            // Squeezed weights are views, the rest the checkpoint's own tensors (disposing twice is harmless).
            foreach (var t in checkpoint.Values.Concat(parts?.Values.SelectMany(p => p.Values) ?? [])) t.Dispose();
        }
    }

    /// <summary>Writes the three components as one safetensors checkpoint in the original layout; the key map comes
    /// from the models' own configs.</summary>
    public static void Save(string path, UNet2DConditionModel unet, AutoencoderKL vae, CLIPTextModel textEncoder)
    {
        if (!Path.GetExtension(path).Equals(".safetensors", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException(
                $"{path}: single-file checkpoints are written as safetensors; give a .safetensors path", nameof(path));
        var map = new SingleFileConfigs(unet.Config, vae.Config, textEncoder.Config).KeyMap();
        var parts = new Dictionary<Component, Dictionary<string, Tensor>>
        {
            [Component.Unet] = StateDict.Of(unet),
            [Component.Vae] = StateDict.Of(vae),
            [Component.TextEncoder] = StateDict.Of(textEncoder),
        };
        try
        {
            var tensors = map.Join(parts);
            SafeTensors.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var t in tensors.Values) t.Dispose();
        }
        finally
        {
            foreach (var t in parts.Values.SelectMany(p => p.Values)) t.Dispose();
        }
    }

    /// <summary>Saves this checkpoint's components (see the static
    /// <see cref="Save(string, UNet2DConditionModel, AutoencoderKL, CLIPTextModel)"/>).</summary>
    public void Save(string path) => Save(path, Unet, Vae, TextEncoder);

    public void Dispose()
    {
        Unet.Dispose();
        Vae.Dispose();
        TextEncoder.Dispose();
    }
}
