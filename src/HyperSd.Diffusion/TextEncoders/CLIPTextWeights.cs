using HyperSd.Diffusion.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.TextEncoders;

/// <summary>transformers' on-disk text encoder folder: <c>config.json</c> + <c>model.safetensors</c> (or sharded).</summary>
internal static class CLIPTextWeights
{
    const string Prefix = "text_model.";

    public static CLIPTextConfig ReadConfig(string dir)
    {
        var path = Path.Combine(dir, "config.json");
        return ModelConfig.Read<CLIPTextConfig>(path).Validate(path);
    }

    /// <summary>Loads the weights into <paramref name="model"/>. Newer transformers save the text tower's keys without the
    /// "text_model." prefix, SD checkpoints with it: both are accepted. The legacy position_ids buffer is dropped.</summary>
    public static void Load(nn.Module model, string dir)
    {
        var (tensors, source) = StateDict.ReadFolder(dir, "model");
        try
        {
            var byName = new Dictionary<string, Tensor>();
            foreach (var (key, value) in tensors)
                if (!byName.TryAdd(Canonical(key), value))
                    throw new InvalidDataException($"{source.Path}: '{key}' is stored both with and without the '{Prefix}' prefix");
            var renamed = source.FilePerKey is null ? source
                : source with { FilePerKey = source.FilePerKey.ToDictionary(kv => Canonical(kv.Key), kv => kv.Value) };
            StateDict.Load(model, byName, renamed, ignored: key => key == Prefix + "embeddings.position_ids");
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>Writes config.json and model.safetensors (keys with the "text_model." prefix, as SD checkpoints have them).</summary>
    public static void Save(nn.Module model, CLIPTextConfig config, string dir)
    {
        Directory.CreateDirectory(dir);
        ModelConfig.Write(Path.Combine(dir, "config.json"), config);
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), StateDict.Of(model), new Dictionary<string, string> { ["format"] = "pt" });
    }

    static string Canonical(string key) =>
        key.StartsWith(Prefix, StringComparison.Ordinal) || key.StartsWith("text_projection.", StringComparison.Ordinal) ? key : Prefix + key;
}
