using System.Text.Json;
using System.Text.Json.Nodes;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Verification;

/// <summary>Checks the full-size architectures in <c>layouts/</c> (*_unet.json, *_vae.json: config, parameter count,
/// every state-dict key with its shape): the model built from "config" on the meta device (no memory) must have
/// exactly those keys and shapes and that many parameters.</summary>
public sealed class ModelLayoutSuite : IFixtureSuite
{
    public string Folder => "layouts";

    public IEnumerable<FixtureCheck> Run(string dir)
    {
        var checks = new List<FixtureCheck>();
        foreach (var path in Directory.GetFiles(dir, "*.json").Order(StringComparer.Ordinal))
        {
            var file = Path.GetFileName(path);
            Func<JsonNode, nn.Module>? build = file switch
            {
                _ when file.EndsWith("_unet.json", StringComparison.Ordinal) =>
                    c => new UNet2DConditionModel(Read<UNet2DConditionConfig>(c, path), new Device(DeviceType.META)),
                _ when file.EndsWith("_vae.json", StringComparison.Ordinal) =>
                    c => new AutoencoderKL(Read<AutoencoderKLConfig>(c, path), new Device(DeviceType.META)),
                _ => null,
            };
            if (build is null) continue;
            checks.AddRange(Check(file, path, build));
        }
        if (checks.Count == 0) throw new FileNotFoundException($"{dir}: no *_unet.json or *_vae.json layout files");
        return checks;
    }

    static IEnumerable<FixtureCheck> Check(string name, string path, Func<JsonNode, nn.Module> build)
    {
        var layout = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        var config = layout["config"] ?? throw new InvalidDataException($"{path}: no 'config' object");
        var expected = (layout["tensors"] ?? throw new InvalidDataException($"{path}: no 'tensors' object")).AsObject()
            .ToDictionary(kv => kv.Key, kv => kv.Value!.AsArray().Select(s => s!.GetValue<long>()).ToArray());

        using var model = build(config);
        var actual = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        var problems = new List<string>();
        problems.AddRange(expected.Keys.Where(k => !actual.ContainsKey(k)).Select(k => $"missing {k} {Show(expected[k])}"));
        problems.AddRange(actual.Keys.Where(k => !expected.ContainsKey(k)).Select(k => $"extra {k} {Show(actual[k])}"));
        problems.AddRange(expected.Keys.Where(k => actual.ContainsKey(k) && !actual[k].SequenceEqual(expected[k]))
            .Select(k => $"{k}: shape {Show(actual[k])}, expected {Show(expected[k])}"));
        var detail = problems.Count == 0
            ? $"{actual.Count} keys"
            : string.Join("; ", problems.Take(10)) + (problems.Count > 10 ? $"; … {problems.Count - 10} more" : "");
        yield return new FixtureCheck($"{name} keys and shapes", problems.Count, "exact", problems.Count == 0, detail);

        if (layout["parameters"] is { } parameters)
            yield return UnetFixtureSuite.ParameterCheck(PretrainedModel.ParameterCount(model), parameters.GetValue<long>()) with
            {
                Name = $"{name} parameters",
            };
    }

    static T Read<T>(JsonNode config, string path)
    {
        try
        {
            return config.Deserialize<T>(ModelConfig.Json) ?? throw new InvalidDataException($"{path}: empty 'config'");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: invalid 'config' at {e.Path}: {e.Message}");
        }
    }

    static string Show(long[] shape) => $"[{string.Join(", ", shape)}]";
}
