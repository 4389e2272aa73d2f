using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.IO;

/// <summary>
/// Copies named tensors into a module whose module tree gives the names (as in diffusers/transformers).
/// Every problem is reported at once: missing, unexpected and mis-shaped keys, each with the file it came from.
/// </summary>
public static class StateDict
{
    /// <summary>Loads <paramref name="tensors"/> into <paramref name="module"/>, converting dtype and device to the module's.</summary>
    /// <param name="source">Where the tensors came from, for error messages (a file, or key → file).</param>
    /// <param name="optional">Module keys that may be absent from the file (e.g. buffers the module computes itself).</param>
    /// <param name="ignored">File keys that are dropped without complaint (e.g. legacy buffers such as position_ids).</param>
    public static void Load(nn.Module module, IReadOnlyDictionary<string, Tensor> tensors, WeightSource source,
        Func<string, bool>? optional = null, Func<string, bool>? ignored = null)
    {
        var expected = module.state_dict();
        var problems = new List<string>();
        foreach (var (key, target) in expected)
        {
            if (!tensors.TryGetValue(key, out var value))
            {
                if (optional == null || !optional(key))
                    problems.Add($"missing key '{key}' (expected shape {Shape(target)}) in {source.Describe(key)}");
                continue;
            }
            if (!value.shape.SequenceEqual(target.shape))
                problems.Add($"key '{key}' in {source.Describe(key)} has shape {Shape(value)}, the model expects {Shape(target)}");
        }
        foreach (var key in tensors.Keys)
            if (!expected.ContainsKey(key) && (ignored == null || !ignored(key)))
                problems.Add($"unexpected key '{key}' in {source.Describe(key)}");
        if (problems.Count > 0)
            throw new WeightLoadException(module.GetType().Name, problems);

        using var _ = no_grad();
        foreach (var (key, target) in expected)
            if (tensors.TryGetValue(key, out var value) && target.device_type != DeviceType.META)
                target.copy_(value);
    }

    /// <summary>Every tensor a module holds (parameters and buffers), detached, as saved by <see cref="SafeTensors.Save"/>.</summary>
    public static Dictionary<string, Tensor> Of(nn.Module module) =>
        module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach());

    /// <summary>Loads a diffusers weight set from a component folder: a single safetensors file, a variant
    /// (<c>.fp16</c>) or a sharded <c>*.safetensors.index.json</c>.</summary>
    /// <param name="filter">Reads only the tensors whose name it accepts (e.g. one tower of a full CLIPModel checkpoint).</param>
    public static (Dictionary<string, Tensor> Tensors, WeightSource Source) ReadFolder(string dir, string baseName, string? variant = null,
        Func<string, bool>? filter = null)
    {
        var stem = variant is null ? baseName : $"{baseName}.{variant}";
        var single = Path.Combine(dir, $"{stem}.safetensors");
        if (File.Exists(single))
            return (SafeTensors.Load(single, filter), new WeightSource(single));
        var index = Path.Combine(dir, $"{stem}.safetensors.index.json");
        if (File.Exists(index))
        {
            var map = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(index))?["weight_map"]?.AsObject()
                      ?? throw new InvalidDataException($"{index}: no 'weight_map' object");
            var files = map.Where(kv => filter == null || filter(kv.Key))
                .ToDictionary(kv => kv.Key, kv => Path.Combine(dir, kv.Value!.GetValue<string>()));
            var all = new Dictionary<string, Tensor>();
            foreach (var file in files.Values.Distinct())
                foreach (var (k, v) in SafeTensors.Load(file, filter)) all[k] = v;
            return (all, new WeightSource(index, files));
        }
        foreach (var pickle in new[] { ".bin", ".ckpt", ".pt" })
            if (File.Exists(Path.Combine(dir, stem + pickle)))
                SafeTensors.CheckNotPickle(Path.Combine(dir, stem + pickle));
        throw new FileNotFoundException($"no weights in {dir}: expected {stem}.safetensors or {stem}.safetensors.index.json", single);
    }

    static string Shape(Tensor t) => $"[{string.Join(", ", t.shape)}]";
}

/// <summary>Where weights came from: one file, or (sharded) a file per key.</summary>
public sealed record WeightSource(string Path, IReadOnlyDictionary<string, string>? FilePerKey = null)
{
    public string Describe(string key) => FilePerKey != null && FilePerKey.TryGetValue(key, out var f) ? f : Path;
}

public sealed class WeightLoadException(string model, IReadOnlyList<string> problems)
    : Exception($"cannot load {model} weights: {problems.Count} problem(s):\n  " + string.Join("\n  ", problems.Take(20))
                + (problems.Count > 20 ? $"\n  … and {problems.Count - 20} more" : ""))
{
    public IReadOnlyList<string> Problems { get; } = problems;
}
