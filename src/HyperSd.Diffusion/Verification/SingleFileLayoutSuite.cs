using System.Text.Json.Nodes;
using HyperSd.Diffusion.Loaders.SingleFile;

namespace HyperSd.Diffusion.Verification;

/// <summary>
/// Checks the single-file key map on the layout files alone (no weights): every key of <c>sd15_single_file.json</c>
/// maps onto a key of the matching diffusers layout with the same shape (after squeezing 1×1 convs), none is left
/// unmapped except the known extras, and every diffusers key is covered exactly once.
/// </summary>
public sealed class SingleFileLayoutSuite : IFixtureSuite
{
    public string Folder => "layouts";

    public IEnumerable<FixtureCheck> Run(string folder)
    {
        var unet = ReadLayout(folder, "sd15_unet.json");
        var vae = ReadLayout(folder, "sd15_vae.json");
        var text = ReadLayout(folder, "sd15_text_encoder.json");
        var singleFile = Tensors(ReadLayout(folder, "sd15_single_file.json"), "sd15_single_file.json");
        var map = SingleFileKeyMap.FromConfigs(
            Config(unet, "sd15_unet.json"), Config(vae, "sd15_vae.json"), Config(text, "sd15_text_encoder.json"));

        // The text encoder layout is CLIPTextModel's inner module; the model is keyed like transformers' CLIPTextModel.
        var expected = new Dictionary<Component, Dictionary<string, long[]>>
        {
            [Component.Unet] = Tensors(unet, "sd15_unet.json"),
            [Component.Vae] = Tensors(vae, "sd15_vae.json"),
            [Component.TextEncoder] = Tensors(text, "sd15_text_encoder.json")
                .ToDictionary(
                    kv => kv.Key.StartsWith("text_model.", StringComparison.Ordinal) ? kv.Key : "text_model." + kv.Key,
                    kv => kv.Value),
        };

        var unmapped = new List<string>();
        int ignored = 0;
        var mapped = expected.Keys.ToDictionary(c => c, _ => new List<(string Key, SingleFileTarget Target, long[] Shape)>());
        foreach (var (key, shape) in singleFile)
        {
            if (SingleFileKeyMap.IsIgnored(key)) ignored++;
            else if (map.Map(key) is { } target) mapped[target.Component].Add((key, target, shape));
            else unmapped.Add(key);
        }
        yield return FixtureCheck.Exact("single_file/unmapped keys", unmapped, [],
            $"{singleFile.Count} keys, {ignored} ignored extras" +
            $"{(unmapped.Count > 0 ? "; e.g. " + string.Join(", ", unmapped.Take(3)) : "")}");

        foreach (var (component, layout) in expected)
            yield return Cover(component, layout, mapped[component]);
    }

    static FixtureCheck Cover(
        Component component, Dictionary<string, long[]> layout, List<(string Key, SingleFileTarget Target, long[] Shape)> mapped)
    {
        var problems = new List<string>();
        var coveredBy = new Dictionary<string, string>(StringComparer.Ordinal);
        int reshaped = 0;
        foreach (var (key, target, shape) in mapped)
        {
            if (!layout.TryGetValue(target.DiffusersKey, out var want))
            {
                problems.Add($"'{key}' → '{target.DiffusersKey}' is not in the diffusers layout");
                continue;
            }
            if (!coveredBy.TryAdd(target.DiffusersKey, key))
                problems.Add($"'{target.DiffusersKey}' covered twice: '{coveredBy[target.DiffusersKey]}' and '{key}'");
            long[] got;
            try { got = target.ConvertShape(shape); }
            catch (InvalidDataException e) { problems.Add($"'{key}': {e.Message}"); continue; }
            if (target.SqueezeConv1x1 && got.Length != shape.Length) reshaped++;
            if (!got.SequenceEqual(want))
                problems.Add($"'{key}' [{string.Join(", ", got)}] → '{target.DiffusersKey}' [{string.Join(", ", want)}]");
        }
        problems.AddRange(layout.Keys.Where(k => !coveredBy.ContainsKey(k)).Select(k => $"'{k}' not covered"));
        var detail = $"{mapped.Count} single-file keys → {coveredBy.Count}/{layout.Count} diffusers keys, {reshaped} squeezed 1×1 convs"
                     + (problems.Count > 0 ? "; " + string.Join("; ", problems.Take(3)) : "");
        return new FixtureCheck($"single_file/{component}", problems.Count, "exact", problems.Count == 0, detail);
    }

    static JsonObject ReadLayout(string folder, string file)
    {
        var path = Path.Combine(folder, file);
        if (!File.Exists(path)) throw new FileNotFoundException($"layout file not found: {path}", path);
        return JsonNode.Parse(File.ReadAllText(path))?.AsObject() ?? throw new InvalidDataException($"{path}: empty layout");
    }

    static JsonObject Config(JsonObject layout, string file) =>
        layout["config"]?.AsObject() ?? throw new InvalidDataException($"{file}: no 'config' object");

    static Dictionary<string, long[]> Tensors(JsonObject layout, string file) =>
        (layout["tensors"]?.AsObject() ?? throw new InvalidDataException($"{file}: no 'tensors' object"))
        .ToDictionary(kv => kv.Key, kv => kv.Value!.AsArray().Select(d => d!.GetValue<long>()).ToArray(), StringComparer.Ordinal);
}
