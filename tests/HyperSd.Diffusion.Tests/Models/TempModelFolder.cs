using System.Text.Json.Nodes;
using HyperSd.Diffusion.IO;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Models;

/// <summary>A temporary copy of a model fixture folder that a test may modify.</summary>
sealed class TempModelFolder : IDisposable
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("hypersd-model-").FullName;
    public string Weights => System.IO.Path.Combine(Dir, "diffusion_pytorch_model.safetensors");
    public string Config => System.IO.Path.Combine(Dir, "config.json");

    public TempModelFolder(string fixture)
    {
        foreach (var file in new[] { "config.json", "diffusion_pytorch_model.safetensors" })
            File.Copy(Fixtures.Path(fixture, file), System.IO.Path.Combine(Dir, file));
    }

    /// <summary>Rewrites the weights file after <paramref name="edit"/> changed the name → tensor map.</summary>
    public void EditWeights(Action<Dictionary<string, Tensor>> edit)
    {
        var tensors = SafeTensors.Load(Weights);
        edit(tensors);
        SafeTensors.Save(Weights, tensors);
        foreach (var t in tensors.Values) t.Dispose();
    }

    public void EditConfig(Action<JsonObject> edit)
    {
        var json = JsonNode.Parse(File.ReadAllText(Config))!.AsObject();
        edit(json);
        File.WriteAllText(Config, json.ToJsonString());
    }

    public void Dispose() => Directory.Delete(Dir, true);
}
