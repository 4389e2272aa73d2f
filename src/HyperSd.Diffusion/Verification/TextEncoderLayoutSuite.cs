using System.Text.Json;
using System.Text.Json.Nodes;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Verification;

/// <summary>The full-size SD1.5 text encoder (CLIP ViT-L/14 text tower) built from <c>layouts/sd15_text_encoder.json</c>'s
/// config on the meta device has exactly the reference keys, shapes and parameter count.</summary>
public sealed class TextEncoderLayoutSuite : IFixtureSuite
{
    const string Prefix = "text_model.";

    public string Folder => "layouts";

    public IEnumerable<FixtureCheck> Run(string folder)
    {
        var path = Path.Combine(folder, "sd15_text_encoder.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"layout not found: {path}", path);
        var layout = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        var config = layout["config"].Deserialize<CLIPTextConfig>(ModelConfig.Json)
                     ?? throw new InvalidDataException($"{path}: no 'config'");
        // the reference keys are the text tower's, without the "text_model." prefix
        var expected = layout["tensors"]!.AsObject().ToDictionary(kv => kv.Key,
            kv => kv.Value!.AsArray().Select(s => s!.GetValue<long>()).ToArray());

        using var model = new CLIPTextModel(config, new Device(DeviceType.META));
        var actual = model.state_dict().ToDictionary(
            kv => kv.Key.StartsWith(Prefix, StringComparison.Ordinal) ? kv.Key[Prefix.Length..] : kv.Key,
            kv => kv.Value.shape);

        var missing = expected.Keys.Where(k => !actual.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var extra = actual.Keys.Where(k => !expected.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var misShaped = expected.Where(kv => actual.TryGetValue(kv.Key, out var s) && !s.SequenceEqual(kv.Value))
            .Select(kv => $"{kv.Key} [{string.Join(", ", actual[kv.Key])}] vs expected [{string.Join(", ", kv.Value)}]").ToList();
        int problems = missing.Count + extra.Count + misShaped.Count;
        yield return new FixtureCheck("sd15_text_encoder/keys", problems, "exact", problems == 0,
            problems == 0
                ? $"{expected.Count} keys"
                : Describe("missing", missing) + Describe("extra", extra) + Describe("mis-shaped", misShaped));

        long parameters = model.parameters().Sum(p => p.numel());
        long expectedParameters = layout["parameters"]!.GetValue<long>();
        yield return FixtureCheck.Exact("sd15_text_encoder/parameters", [parameters], [expectedParameters],
            $"{parameters:N0} vs expected {expectedParameters:N0}");
    }

    static string Describe(string what, List<string> keys) =>
        keys.Count == 0 ? "" : $"{what} ({keys.Count}): {string.Join("; ", keys.Take(10))}{(keys.Count > 10 ? "; …" : "")}. ";
}
