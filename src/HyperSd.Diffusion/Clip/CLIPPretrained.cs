using System.Text.Json;
using System.Text.Json.Nodes;
using HyperSd.Diffusion.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Clip;

/// <summary>One tower of a CLIP model: its key prefix, its projection's key prefix and its section in a full
/// <c>CLIPConfig</c>.</summary>
public sealed record CLIPTower(string Prefix, string Projection, string ConfigSection)
{
    public static readonly CLIPTower Text = new("text_model.", "text_projection.", "text_config");
    public static readonly CLIPTower Vision = new("vision_model.", "visual_projection.", "vision_config");

    /// <summary>Whether a key of a full CLIPModel checkpoint belongs to this tower (or its projection).</summary>
    public bool Owns(string key) =>
        key.StartsWith(Prefix, StringComparison.Ordinal) || key.StartsWith(Projection, StringComparison.Ordinal);

    /// <summary>Whether a key belongs to the other tower, its projection, or the model's logit_scale.</summary>
    public bool Foreign(string key) => key == "logit_scale" || (this == Text ? Vision : Text).Owns(key);
}

/// <summary>
/// transformers' on-disk CLIP folders: <c>config.json</c> + <c>model.safetensors</c> (or sharded). A tower model
/// (CLIPTextModel…, CLIPVisionModel…) loads from its own folder or from a full <c>CLIPModel</c> folder (e.g.
/// openai/clip-vit-large-patch14, PickScore), whose config nests <c>text_config</c>/<c>vision_config</c> and whose
/// weights hold both towers, both projections and <c>logit_scale</c>; the other tower's tensors are not read.
/// </summary>
public static class CLIPPretrained
{
    public const string ConfigName = "config.json";
    public const string WeightsName = "model";

    /// <summary>Reads a tower config: the file itself, or its section of a full CLIPConfig. In a full config the
    /// <c>*_config_dict</c> entries of old checkpoints override the section (as transformers' CLIPConfig does), and the
    /// top-level projection_dim, which CLIPModel's projections use, replaces the section's.</summary>
    public static T ReadConfig<T>(string dir, CLIPTower tower)
    {
        var path = Path.Combine(dir, ConfigName);
        if (!File.Exists(path)) throw new FileNotFoundException($"config not found: {path}", path);
        try
        {
            var root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                       ?? throw new InvalidDataException($"{path}: expected a JSON object");
            var other = tower == CLIPTower.Text ? CLIPTower.Vision : CLIPTower.Text;
            JsonObject node = root;
            if (root[tower.ConfigSection] is JsonObject section)
            {
                node = (JsonObject)section.DeepClone();
                if (root[tower.ConfigSection + "_dict"] is JsonObject overrides)
                    foreach (var (key, value) in overrides) node[key] = value?.DeepClone();
                if (root["projection_dim"] is JsonValue projection) node["projection_dim"] = projection.DeepClone();
            }
            else if (root.ContainsKey(other.ConfigSection))
                throw new InvalidDataException($"{path}: a CLIPModel config with '{other.ConfigSection}' but no '{tower.ConfigSection}'");
            return node.Deserialize<T>(ModelConfig.Json) ?? throw new InvalidDataException($"{path}: empty config");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: invalid config at {e.Path}: {e.Message}");
        }
    }

    /// <summary>Loads a tower's weights into <paramref name="model"/>. Keys with or without the tower prefix are accepted
    /// (SD checkpoints have it, some exports drop it); the legacy position_ids buffer is dropped; in a full CLIPModel
    /// checkpoint the other tower's tensors and logit_scale are skipped unread.</summary>
    public static void Load(nn.Module model, string dir, CLIPTower tower)
    {
        var (tensors, source) = StateDict.ReadFolder(dir, WeightsName, filter: key => !tower.Foreign(key));
        try
        {
            string Canonical(string key) => tower.Owns(key) ? key : tower.Prefix + key;
            var byName = new Dictionary<string, Tensor>();
            foreach (var (key, value) in tensors)
                if (!byName.TryAdd(Canonical(key), value))
                    throw new InvalidDataException($"{source.Path}: '{key}' is stored both with and without the '{tower.Prefix}' prefix");
            var renamed = source.FilePerKey is null ? source
                : source with { FilePerKey = source.FilePerKey.ToDictionary(kv => Canonical(kv.Key), kv => kv.Value) };
            StateDict.Load(model, byName, renamed, ignored: key => key == tower.Prefix + "embeddings.position_ids");
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>Writes config.json and model.safetensors (keys with the tower prefix, as transformers saves them).</summary>
    public static void Save<TConfig>(nn.Module model, TConfig config, string dir)
    {
        Directory.CreateDirectory(dir);
        ModelConfig.Write(Path.Combine(dir, ConfigName), config);
        var tensors = StateDict.Of(model);
        try
        {
            SafeTensors.Save(Path.Combine(dir, WeightsName + ".safetensors"), tensors,
                new Dictionary<string, string> { ["format"] = "pt" });
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>A full CLIPModel's <c>logit_scale</c> (the log of the similarity temperature), read alone from its weights.</summary>
    public static double ReadLogitScale(string dir)
    {
        var (tensors, source) = StateDict.ReadFolder(dir, WeightsName, filter: key => key == "logit_scale");
        try
        {
            if (!tensors.TryGetValue("logit_scale", out var scale))
                throw new InvalidDataException($"{source.Path}: no 'logit_scale' tensor: not a full CLIPModel checkpoint");
            if (scale.numel() != 1)
                throw new InvalidDataException(
                    $"{source.Describe("logit_scale")}: 'logit_scale' has shape [{string.Join(", ", scale.shape)}], expected a scalar");

            return scale.to(ScalarType.Float64).item<double>();
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }
}
