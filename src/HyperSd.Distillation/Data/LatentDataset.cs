using System.Text.Json;
using HyperSd.Diffusion.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Data;

/// <summary>
/// Encoded training data: VAE latents (scaled, as the UNet sees them), the tokenised captions, the captions
/// themselves and optional per-sample labels (JSON; the toy world's attributes). What dataset preparation writes
/// and what teacher training, trajectory generation and the trainers read. Text embeddings are optional: the frozen
/// text encoder can recompute them, which is cheap next to a UNet step and keeps shards small. SDXL data adds the
/// second tokenizer's ids (and, when precomputed, the pooled embeddings).
/// </summary>
public sealed class LatentDataset : IDisposable
{
    public Tensor Latents { get; }
    public Tensor InputIds { get; }
    public IReadOnlyList<string> Captions { get; }
    public IReadOnlyList<string?> Labels { get; }
    /// <summary>The second tokenizer's ids (SDXL), or null.</summary>
    public Tensor? InputIds2 { get; }
    /// <summary>Precomputed text embeddings [N, tokens, width], or null.</summary>
    public Tensor? PromptEmbeds { get; }
    /// <summary>Precomputed pooled text embeddings [N, width] (SDXL), or null.</summary>
    public Tensor? PooledPromptEmbeds { get; }
    public int Count => Captions.Count;

    public LatentDataset(Tensor latents, Tensor inputIds, IReadOnlyList<string> captions, IReadOnlyList<string?>? labels = null,
        Tensor? inputIds2 = null, Tensor? promptEmbeds = null, Tensor? pooledPromptEmbeds = null)
    {
        long n = captions.Count;
        if (latents.shape[0] != n || inputIds.shape[0] != n || (labels != null && labels.Count != n))
            throw new ArgumentException($"dataset parts disagree: {latents.shape[0]} latents, {inputIds.shape[0]} token rows, " +
                                        $"{n} captions, {labels?.Count} labels");
        foreach (var (key, t) in Optional(inputIds2, promptEmbeds, pooledPromptEmbeds))
            if (t.shape[0] != n) throw new ArgumentException($"dataset parts disagree: {t.shape[0]} rows of {key}, {n} captions");
        Latents = latents; InputIds = inputIds; Captions = captions;
        Labels = labels ?? Enumerable.Repeat<string?>(null, captions.Count).ToList();
        InputIds2 = inputIds2; PromptEmbeds = promptEmbeds; PooledPromptEmbeds = pooledPromptEmbeds;
    }

    static IEnumerable<(string Key, Tensor Tensor)> Optional(Tensor? inputIds2, Tensor? promptEmbeds, Tensor? pooledPromptEmbeds) =>
        new[] { ("input_ids_2", inputIds2), ("prompt_embeds", promptEmbeds), ("pooled_prompt_embeds", pooledPromptEmbeds) }
            .Where(p => p.Item2 is not null).Select(p => (p.Item1, p.Item2!));

    /// <summary>The captions' token ids at <paramref name="indices"/> as a <see cref="Diffusion.Pipelines.PromptConditioner"/>
    /// takes them: [n, tokens], or [n, 2, tokens] with the second tokenizer's (SDXL).</summary>
    public Tensor TokenIds(Tensor indices)
    {
        var ids = InputIds.index_select(0, indices);
        if (InputIds2 is null) return ids;
        using (ids)
        using (var ids2 = InputIds2.index_select(0, indices))
            return stack([ids, ids2], 1);
    }

    /// <summary>Joins datasets (a prepared dataset's shards) into one.</summary>
    public static LatentDataset Concat(IReadOnlyList<LatentDataset> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("no dataset parts given");
        Tensor? CatOptional(Func<LatentDataset, Tensor?> part, string key)
        {
            var present = parts.Count(p => part(p) is not null);
            if (present == 0) return null;
            if (present != parts.Count)
                throw new ArgumentException($"dataset parts disagree: only {present} of {parts.Count} have '{key}'");
            return cat(parts.Select(p => part(p)!).ToArray());
        }
        return new LatentDataset(cat(parts.Select(p => p.Latents).ToArray()), cat(parts.Select(p => p.InputIds).ToArray()),
            parts.SelectMany(p => p.Captions).ToList(), parts.SelectMany(p => p.Labels).ToList(),
            CatOptional(p => p.InputIds2, "input_ids_2"), CatOptional(p => p.PromptEmbeds, "prompt_embeds"),
            CatOptional(p => p.PooledPromptEmbeds, "pooled_prompt_embeds"));
    }

    const string TensorsFile = "latents.safetensors";
    const string CaptionsFile = "captions.jsonl";

    /// <summary>Writes <c>latents.safetensors</c> (latents, input_ids and the optional input_ids_2, prompt_embeds,
    /// pooled_prompt_embeds) and <c>captions.jsonl</c> (caption, label).</summary>
    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        var tensors = new Dictionary<string, Tensor> { ["latents"] = Latents, ["input_ids"] = InputIds };
        foreach (var (key, t) in Optional(InputIds2, PromptEmbeds, PooledPromptEmbeds)) tensors[key] = t;
        SafeTensors.Save(Path.Combine(dir, TensorsFile), tensors);
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
        return new LatentDataset(tensors["latents"], tensors["input_ids"],
            rows.Select(r => r.Caption).ToList(), rows.Select(r => r.Label).ToList(),
            tensors.GetValueOrDefault("input_ids_2"), tensors.GetValueOrDefault("prompt_embeds"),
            tensors.GetValueOrDefault("pooled_prompt_embeds"));
    }

    public void Dispose()
    {
        Latents.Dispose();
        InputIds.Dispose();
        foreach (var (_, t) in Optional(InputIds2, PromptEmbeds, PooledPromptEmbeds)) t.Dispose();
    }

    sealed record Row(string Caption, string? Label);
}
