using HyperSd.Diffusion.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models;

/// <summary>The diffusers on-disk layout of a model component (what diffusers' ModelMixin reads and writes):
/// <c>config.json</c> plus <c>diffusion_pytorch_model.safetensors</c> (or a variant / sharded index).</summary>
public static class PretrainedModel
{
    public const string ConfigName = "config.json";
    public const string WeightsName = "diffusion_pytorch_model";

    /// <summary>Reads the config, builds the model with <paramref name="create"/>, loads the weights into it
    /// (converted to the model's device and dtype) and puts it in eval mode, as diffusers' from_pretrained does.</summary>
    public static TModel Load<TConfig, TModel>(string dir, Func<TConfig, TModel> create, string? variant = null) where TModel : nn.Module
    {
        var configPath = Path.Combine(dir, ConfigName);
        var config = ModelConfig.Read<TConfig>(configPath);
        TModel model;
        try { model = create(config); }
        catch (ArgumentException e) { throw new InvalidDataException($"{configPath}: {e.Message}", e); }
        var (tensors, source) = StateDict.ReadFolder(dir, WeightsName, variant);
        try
        {
            StateDict.Load(model, tensors, source);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
        model.eval();
        return model;
    }

    /// <summary>Writes <c>config.json</c> and <c>diffusion_pytorch_model.safetensors</c> into <paramref name="dir"/>.</summary>
    public static void Save<TConfig>(nn.Module model, TConfig config, string dir)
    {
        Directory.CreateDirectory(dir);
        ModelConfig.Write(Path.Combine(dir, ConfigName), config);
        var tensors = StateDict.Of(model);
        try
        {
            SafeTensors.Save(
                Path.Combine(dir, WeightsName + ".safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>Number of parameter elements (what diffusers' num_parameters() reports).</summary>
    public static long ParameterCount(nn.Module model) => model.parameters().Sum(p => p.numel());
}
