using System.Text.Json.Nodes;
using HyperSd.Diffusion.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Lora;

public enum LoraFileFormat
{
    /// <summary>kohya sd-scripts: <c>lora_unet_&lt;path with _&gt;.lora_down.weight</c> / <c>.lora_up.weight</c> / <c>.alpha</c>.</summary>
    Kohya,
    /// <summary>diffusers/PEFT: <c>unet.&lt;path&gt;.lora_A.weight</c> / <c>.lora_B.weight</c>; alpha in the metadata.</summary>
    Peft,
}

/// <summary>Saves and loads UNet LoRA adapters in the kohya and diffusers/PEFT safetensors layouts.</summary>
public static class LoraFormats
{
    const string KohyaPrefix = "lora_unet_";
    const string PeftPrefix = "unet.";
    const string PeftMetadataKey = "lora_adapter_metadata";

    public static void Save(LoraAdapter adapter, string path, LoraFileFormat format, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var tensors = new Dictionary<string, Tensor>();
        var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>());
        foreach (var (modulePath, layer) in adapter.Layers)
        {
            if (format == LoraFileFormat.Kohya)
            {
                var name = KohyaPrefix + modulePath.Replace('.', '_');
                tensors[$"{name}.lora_down.weight"] = layer.DownWeight;
                tensors[$"{name}.lora_up.weight"] = layer.UpWeight;
                tensors[$"{name}.alpha"] = tensor((float)layer.Alpha);
            }
            else
            {
                tensors[$"{PeftPrefix}{modulePath}.lora_A.weight"] = layer.DownWeight;
                tensors[$"{PeftPrefix}{modulePath}.lora_B.weight"] = layer.UpWeight;
            }
        }
        if (format == LoraFileFormat.Peft)
        {
            var alphas = adapter.Layers.ToDictionary(kv => kv.Key, kv => kv.Value.Alpha);
            var ranks = adapter.Layers.ToDictionary(kv => kv.Key, kv => kv.Value.Rank);
            var config = new JsonObject
            {
                ["r"] = adapter.Rank, ["lora_alpha"] = adapter.Alpha,
                ["target_modules"] = new JsonArray(adapter.Layers.Keys.Select(k => (JsonNode?)JsonValue.Create(k)).ToArray()),
            };
            if (alphas.Values.Distinct().Count() > 1)
                config["alpha_pattern"] = new JsonObject(alphas.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
            if (ranks.Values.Distinct().Count() > 1)
                config["rank_pattern"] = new JsonObject(ranks.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
            meta[PeftMetadataKey] = new JsonObject { ["unet"] = config }.ToJsonString();
        }
        meta["format"] = "pt";
        SafeTensors.Save(path, tensors, meta);
    }

    /// <summary>Loads a LoRA file (format detected from its keys) as an adapter for <paramref name="model"/>.
    /// Every key must name a Linear/Conv2d of the model with matching shapes.</summary>
    public static LoraAdapter Load(string path, nn.Module model, Device? device = null, ScalarType? dtype = null)
    {
        var tensors = SafeTensors.Load(path);
        if (tensors.Count == 0) throw new InvalidDataException($"{path}: the LoRA file holds no tensors");
        var format = Detect(tensors.Keys, path);
        var modules = model.named_modules()
            .Where(m => m.module is Linear or Conv2d)
            .ToDictionary(m => m.name, m => (nn.Module<Tensor, Tensor>)m.module, StringComparer.Ordinal);
        var byKohyaName = modules.Keys.ToDictionary(k => KohyaPrefix + k.Replace('.', '_'), k => k, StringComparer.Ordinal);

        var groups = new Dictionary<string, Dictionary<string, Tensor>>(StringComparer.Ordinal);
        foreach (var (key, value) in tensors)
        {
            var (module, part) = format == LoraFileFormat.Kohya ? SplitKohya(key) : SplitPeft(key);
            if (module is null)
                throw new InvalidDataException($"{path}: unexpected key '{key}' in a {format} LoRA file");
            var modulePath = format == LoraFileFormat.Kohya
                ? byKohyaName.GetValueOrDefault(module) ?? throw new InvalidDataException(
                    $"{path}: key '{key}' names no Linear/Conv2d module of {model.GetType().Name}")
                : module;
            if (!modules.ContainsKey(modulePath))
                throw new InvalidDataException($"{path}: key '{key}' names no Linear/Conv2d module '{modulePath}' of {model.GetType().Name}");
            if (!groups.TryGetValue(modulePath, out var g)) groups[modulePath] = g = new Dictionary<string, Tensor>();
            g[part] = value;
        }

        var peftAlpha = format == LoraFileFormat.Peft ? PeftAlphas(path) : null;
        var layers = new List<(string, LoraLayer)>();
        foreach (var (modulePath, parts) in groups.OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            if (!parts.TryGetValue("down", out var down) || !parts.TryGetValue("up", out var up))
                throw new InvalidDataException($"{path}: module '{modulePath}' lacks its {(parts.ContainsKey("down") ? "up" : "down")} weight");
            int rank = (int)down.shape[0];
            double alpha = parts.TryGetValue("alpha", out var a) ? a.to(float64).item<double>()
                : peftAlpha?.Invoke(modulePath, rank) ?? rank;
            var layer = new LoraLayer(modules[modulePath], rank, alpha, device, dtype);
            var expectedDown = layer.DownWeight.shape;
            var expectedUp = layer.UpWeight.shape;
            if (!down.shape.SequenceEqual(expectedDown) || !up.shape.SequenceEqual(expectedUp))
                throw new InvalidDataException(
                    $"{path}: LoRA of '{modulePath}' has down [{string.Join(", ", down.shape)}] and up [{string.Join(", ", up.shape)}]; " +
                    $"the model needs [{string.Join(", ", expectedDown)}] and [{string.Join(", ", expectedUp)}]");
            using (no_grad())
            {
                layer.DownWeight.copy_(down);
                layer.UpWeight.copy_(up);
            }
            layers.Add((modulePath, layer));
        }
        return LoraAdapter.FromLayers(layers);
    }

    public static LoraFileFormat Detect(IEnumerable<string> keys, string path)
    {
        var first = keys.First();
        if (first.StartsWith(KohyaPrefix, StringComparison.Ordinal)) return LoraFileFormat.Kohya;
        if (first.Contains(".lora_A.") || first.Contains(".lora_B.")) return LoraFileFormat.Peft;
        if (first.StartsWith("lora_te", StringComparison.Ordinal))
            throw new NotSupportedException($"{path}: text-encoder LoRAs ('{first}') are not supported; only UNet LoRAs");
        throw new InvalidDataException($"{path}: '{first}' is neither a kohya (lora_unet_…) nor a PEFT (….lora_A.weight) LoRA key");
    }

    static (string? Module, string Part) SplitKohya(string key)
    {
        foreach (var (suffix, part) in new[] { (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".alpha", "alpha") })
            if (key.EndsWith(suffix, StringComparison.Ordinal) && key.StartsWith(KohyaPrefix, StringComparison.Ordinal))
                return (key[..^suffix.Length], part);
        return (null, "");
    }

    static (string? Module, string Part) SplitPeft(string key)
    {
        var k = key.StartsWith(PeftPrefix, StringComparison.Ordinal) ? key[PeftPrefix.Length..] : key;
        foreach (var (suffix, part) in new[] { (".lora_A.weight", "down"), (".lora_B.weight", "up"), (".alpha", "alpha") })
            if (k.EndsWith(suffix, StringComparison.Ordinal))
                return (k[..^suffix.Length], part);
        return (null, "");
    }

    /// <summary>Alpha per module from the PEFT config stored in the metadata (alpha_pattern, else lora_alpha);
    /// without one, alpha = rank (scale 1), as diffusers assumes.</summary>
    static Func<string, int, double>? PeftAlphas(string path)
    {
        if (!SafeTensors.ReadMetadata(path).TryGetValue(PeftMetadataKey, out var json)) return null;
        var config = JsonNode.Parse(json)?["unet"] ?? JsonNode.Parse(json);
        var alpha = config?["lora_alpha"]?.GetValue<double>();
        var pattern = config?["alpha_pattern"]?.AsObject();
        return (module, rank) => pattern?[module]?.GetValue<double>() ?? alpha ?? rank;
    }
}
