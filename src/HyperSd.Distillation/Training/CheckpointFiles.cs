using System.Text.Json;
using HyperSd.Diffusion.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Training;

/// <summary>
/// What every trainer's checkpoint does the same way: a checkpoint folder written beside the current one and swapped in
/// (through <c>.tmp</c> and <c>.old</c>, so a crash at any point leaves one whole checkpoint), module weights as
/// safetensors, seeded generators' states, and JSON state written atomically.
/// </summary>
public static class CheckpointFiles
{
    public const string RngFile = "rng.safetensors";

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Writes a new checkpoint into a fresh folder with <paramref name="write"/>, then swaps it in for
    /// <paramref name="target"/>.</summary>
    public static void Save(string target, Action<string> write)
    {
        var tmp = target + ".tmp";
        var old = target + ".old";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        Directory.CreateDirectory(tmp);
        write(tmp);
        if (Directory.Exists(old)) Directory.Delete(old, true);
        if (Directory.Exists(target)) Directory.Move(target, old);
        Directory.Move(tmp, target);
        if (Directory.Exists(old)) Directory.Delete(old, true);
    }

    /// <summary>The whole checkpoint to resume from, or null when there is none (a crash between the two moves leaves it
    /// at <c>.old</c>).</summary>
    public static string? Find(string target) =>
        Directory.Exists(target) ? target : Directory.Exists(target + ".old") ? target + ".old" : null;

    /// <summary>Loads a safetensors state dict into <paramref name="module"/>, naming the file in any mismatch.</summary>
    public static void LoadInto(nn.Module module, string path)
    {
        var tensors = SafeTensors.Load(path);
        try { StateDict.Load(module, tensors, new WeightSource(path)); }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
    }

    /// <summary>Saves the generators' states under their keys into <c>rng.safetensors</c> of <paramref name="dir"/>.</summary>
    public static void SaveGenerators(string dir, IReadOnlyDictionary<string, Generator> generators)
    {
        var states = generators.ToDictionary(g => g.Key, g => g.Value.get_state());
        try { SafeTensors.Save(Path.Combine(dir, RngFile), states); }
        finally { foreach (var s in states.Values) s.Dispose(); }
    }

    /// <summary>Restores each generator's state from <c>rng.safetensors</c> of <paramref name="dir"/>.</summary>
    public static void LoadGenerators(string dir, IReadOnlyDictionary<string, Generator> generators)
    {
        var path = Path.Combine(dir, RngFile);
        var states = SafeTensors.Load(path);
        try
        {
            foreach (var (key, g) in generators)
                g.set_state(states.TryGetValue(key, out var saved) ? saved
                    : throw new InvalidDataException(
                        $"{path}: missing generator state '{key}' (a checkpoint of an older version: restart the stage)"));
        }
        finally { foreach (var t in states.Values) t.Dispose(); }
    }

    public static void WriteJson<T>(string path, T value)
    {
        var tmp = path + ".tmp";
        File.WriteAllText(tmp, JsonSerializer.Serialize(value, Json));
        File.Move(tmp, path, overwrite: true);
    }

    public static T ReadJson<T>(string path) => JsonSerializer.Deserialize<T>(File.ReadAllText(path))
        ?? throw new InvalidDataException($"{path}: empty JSON");
}
