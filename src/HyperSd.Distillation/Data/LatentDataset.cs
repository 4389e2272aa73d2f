using System.Text.Json;
using HyperSd.Diffusion.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Data;

/// <summary>
/// Encoded training data: VAE latents (scaled, as the UNet sees them), the tokenised captions, the captions
/// themselves and optional per-sample labels (JSON; the toy world's attributes). What dataset preparation writes
/// and what teacher training, trajectory generation and the trainers read. Text embeddings are not stored: the
/// frozen text encoder recomputes them, which is cheap next to a UNet step and keeps shards small.
/// </summary>
public sealed class LatentDataset : IDisposable
{
    public Tensor Latents { get; }
    public Tensor InputIds { get; }
    public IReadOnlyList<string> Captions { get; }
    public IReadOnlyList<string?> Labels { get; }
    public int Count => Captions.Count;

    public LatentDataset(Tensor latents, Tensor inputIds, IReadOnlyList<string> captions, IReadOnlyList<string?>? labels = null)
    {
        long n = captions.Count;
        if (latents.shape[0] != n || inputIds.shape[0] != n || (labels != null && labels.Count != n))
            throw new ArgumentException($"dataset parts disagree: {latents.shape[0]} latents, {inputIds.shape[0]} token rows, {n} captions, {labels?.Count} labels");
        Latents = latents; InputIds = inputIds; Captions = captions;
        Labels = labels ?? Enumerable.Repeat<string?>(null, captions.Count).ToList();
    }

    /// <summary>Samples <paramref name="indices"/> (latents and token ids).</summary>
    public (Tensor Latents, Tensor InputIds) Batch(Tensor indices) => (Latents.index_select(0, indices), InputIds.index_select(0, indices));

    const string TensorsFile = "latents.safetensors";
    const string CaptionsFile = "captions.jsonl";

    /// <summary>Writes <c>latents.safetensors</c> (latents, input_ids) and <c>captions.jsonl</c> (caption, label).</summary>
    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        SafeTensors.Save(Path.Combine(dir, TensorsFile), new Dictionary<string, Tensor> { ["latents"] = Latents, ["input_ids"] = InputIds });
        var tmp = Path.Combine(dir, CaptionsFile + ".tmp");
        File.WriteAllLines(tmp, Captions.Select((c, i) => JsonSerializer.Serialize(new Row(c, Labels[i]))));
        File.Move(tmp, Path.Combine(dir, CaptionsFile), overwrite: true);
    }

    public static LatentDataset Load(string dir)
    {
        var tensors = SafeTensors.Load(Path.Combine(dir, TensorsFile));
        var captionsPath = Path.Combine(dir, CaptionsFile);
        if (!File.Exists(captionsPath)) throw new FileNotFoundException($"dataset captions not found: {captionsPath}", captionsPath);
        var rows = File.ReadAllLines(captionsPath).Select((line, i) =>
            JsonSerializer.Deserialize<Row>(line) ?? throw new InvalidDataException($"{captionsPath}:{i + 1}: empty row")).ToList();
        foreach (var key in new[] { "latents", "input_ids" })
            if (!tensors.ContainsKey(key)) throw new InvalidDataException($"{Path.Combine(dir, TensorsFile)}: missing tensor '{key}'");
        return new LatentDataset(tensors["latents"], tensors["input_ids"], rows.Select(r => r.Caption).ToList(), rows.Select(r => r.Label).ToList());
    }

    public void Dispose()
    {
        Latents.Dispose();
        InputIds.Dispose();
    }

    sealed record Row(string Caption, string? Label);
}
