using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
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
    const string AnotherBase = " (a LoRA for another base model?)";

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
            foreach (var (key, value) in PeftConfig(adapter)) meta[key] = value;
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
                    $"{path}: key '{key}' names no Linear/Conv2d module of {model.GetType().Name}{AnotherBase}")
                : module;
            if (!modules.ContainsKey(modulePath))
                throw new InvalidDataException(
                    $"{path}: key '{key}' names no Linear/Conv2d module '{modulePath}' of {model.GetType().Name}{AnotherBase}");
            if (!groups.TryGetValue(modulePath, out var g)) groups[modulePath] = g = new Dictionary<string, Tensor>();
            g[part] = value;
        }

        var peftAlpha = format == LoraFileFormat.Peft ? PeftAlphas(path) : null;
        var layers = new List<(string, LoraLayer)>();
        foreach (var (modulePath, parts) in groups.OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            if (!parts.TryGetValue("down", out var down) || !parts.TryGetValue("up", out var up))
                throw new InvalidDataException(
                    $"{path}: module '{modulePath}' lacks its {(parts.ContainsKey("down") ? "up" : "down")} weight");
            int rank = (int)down.shape[0];
            double alpha = parts.TryGetValue("alpha", out var a) ? a.to(float64).item<double>()
                : peftAlpha?.Invoke(modulePath, rank) ?? rank;
            var layer = new LoraLayer(modules[modulePath], rank, alpha, device, dtype);
            var expectedDown = layer.DownWeight.shape;
            var expectedUp = layer.UpWeight.shape;
            if (!down.shape.SequenceEqual(expectedDown) || !up.shape.SequenceEqual(expectedUp))
                throw new InvalidDataException(
                    $"{path}: LoRA of '{modulePath}' has down [{string.Join(", ", down.shape)}] and up [{string.Join(", ", up.shape)}]; " +
                    $"the model needs [{string.Join(", ", expectedDown)}] and [{string.Join(", ", expectedUp)}]{AnotherBase}");
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

    /// <summary>The adapter's PEFT <c>LoraConfig</c> as diffusers stores it: one JSON object under
    /// <c>lora_adapter_metadata</c> whose keys carry the component prefix (<c>"unet.r"</c>, <c>"unet.lora_alpha"</c>,
    /// <c>"unet.target_modules"</c>, <c>"unet.rank_pattern"</c>, <c>"unet.alpha_pattern"</c>); diffusers' loader strips
    /// the prefix and passes the rest to <c>LoraConfig(**kwargs)</c>. r and lora_alpha are the most common rank and
    /// alpha; modules that differ are listed by full module path in the patterns (PEFT matches a pattern key against
    /// the module path with <c>(.*\.)?key$</c>).</summary>
    static Dictionary<string, string> PeftConfig(LoraAdapter adapter)
    {
        static T MostCommon<T>(IEnumerable<T> values) where T : notnull =>
            values.GroupBy(v => v).OrderByDescending(g => g.Count()).First().Key;
        var layers = adapter.Layers.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        int r = layers.Count == 0 ? adapter.Rank : MostCommon(layers.Select(kv => kv.Value.Rank));
        double alpha = layers.Count == 0 ? adapter.Alpha : MostCommon(layers.Select(kv => kv.Value.Alpha));
        static JsonObject Pattern<T>(IEnumerable<(string Module, T Value)> items) =>
            new(items.Select(i => KeyValuePair.Create(i.Module, (JsonNode?)JsonValue.Create(i.Value))));
        var config = new JsonObject
        {
            [PeftPrefix + "r"] = r,
            [PeftPrefix + "lora_alpha"] = alpha,
            [PeftPrefix + "target_modules"] = new JsonArray(layers.Select(kv => (JsonNode?)JsonValue.Create(kv.Key)).ToArray()),
            [PeftPrefix + "rank_pattern"] = Pattern(layers.Where(kv => kv.Value.Rank != r).Select(kv => (kv.Key, kv.Value.Rank))),
            [PeftPrefix + "alpha_pattern"] = Pattern(layers.Where(kv => kv.Value.Alpha != alpha).Select(kv => (kv.Key, kv.Value.Alpha))),
        };
        return new Dictionary<string, string> { [PeftMetadataKey] = config.ToJsonString() };
    }

    /// <summary>Alpha per module from the PEFT config stored in the metadata: diffusers' flat form
    /// (<c>"unet.lora_alpha"</c>, <c>"unet.alpha_pattern"</c>), or a nested <c>{"unet": {...}}</c> or bare config as
    /// older files of this project wrote; alpha_pattern keys match as PEFT matches them (exact path, else the regex
    /// <c>(.*\.)?key$</c>, a leading <c>^</c> anchoring at the start), else lora_alpha. Without a config, alpha = rank
    /// (scale 1), as diffusers assumes.</summary>
    static Func<string, int, double>? PeftAlphas(string path)
    {
        if (!SafeTensors.ReadMetadata(path).TryGetValue(PeftMetadataKey, out var json)) return null;
        var root = JsonNode.Parse(json)?.AsObject() ?? throw new InvalidDataException($"{path}: empty {PeftMetadataKey}");
        JsonNode? Get(string name) => root[PeftPrefix + name] ?? root["unet"]?[name] ?? root[name];
        var alpha = Get("lora_alpha")?.GetValue<double>();
        var pattern = Get("alpha_pattern")?.AsObject().Select(kv => (Key: kv.Key, Value: kv.Value!.GetValue<double>())).ToList() ?? [];
        return (module, rank) =>
        {
            foreach (var (key, value) in pattern)
                if (key == module) return value;
            foreach (var (key, value) in pattern)
            {
                var regex = key.StartsWith('^') ? "^(" + key[1..] + ")$" : @"^(.*\.)?(" + key + ")$";
                if (Regex.IsMatch(module, regex)) return value;
            }
            return alpha ?? rank;
        };
    }
}
