using System.Runtime.InteropServices;
using System.Text.Json;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.TextEncoders;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Data;

public sealed record DatasetPreparationOptions
{
    /// <summary>Side of the square training images.</summary>
    public int Resolution { get; init; } = 512;
    /// <summary>Smallest accepted shorter side of a source image; null: the resolution (no upscaling).</summary>
    public int? MinSize { get; init; }
    /// <summary>Samples per shard (the last shard may hold fewer).</summary>
    public int ShardSize { get; init; } = 1000;
    /// <summary>Images per autoencoder (and text encoder) call.</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Seed of the autoencoder's posterior samples.</summary>
    public long Seed { get; init; }

    public DatasetPreparationOptions Validate()
    {
        if (Resolution < 1) throw new ArgumentException($"resolution must be positive, got {Resolution}");
        if (MinSize < 1) throw new ArgumentException($"min size must be positive, got {MinSize}");
        if (ShardSize < 1) throw new ArgumentException($"shard size must be positive, got {ShardSize}");
        if (BatchSize < 1) throw new ArgumentException($"batch size must be positive, got {BatchSize}");
        return this;
    }
}

/// <summary>A source item left out of the dataset, and why.</summary>
public sealed record BadItem(string Id, string Reason);

public sealed record PreparationProgress(int Done, int Total, int Bad);

/// <summary>What <c>dataset.json</c> records of a prepared dataset: its source, how many samples made it into the shards
/// (folders in the <see cref="LatentDataset"/> format, relative to the dataset folder), and the items left out.</summary>
public sealed record DatasetSummary(string Source, int Count, int BadCount, int Resolution, bool TextEmbeddings,
    IReadOnlyList<string> Shards, IReadOnlyList<BadItem> BadItems)
{
    public const string FileName = "dataset.json";

    public static DatasetSummary Read(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"dataset summary not found: {path}", path);
        try
        {
            return JsonSerializer.Deserialize<DatasetSummary>(File.ReadAllText(path), Json)
                ?? throw new InvalidDataException($"{path}: empty");
        }
        catch (JsonException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
    }

    public void Write(string dir) => File.WriteAllText(Path.Combine(dir, FileName), JsonSerializer.Serialize(this, Json));

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };
}

/// <summary>Text embeddings for captions, [N, tokens, width], with the pooled ones [N, width] where the model has them.</summary>
public delegate (Tensor PromptEmbeds, Tensor? PooledPromptEmbeds) PromptEncoder(IReadOnlyList<string> prompts);

/// <summary>
/// Turns images with captions into training shards: each image centre-cropped to a square, resized (bicubic) to the
/// resolution and encoded by the autoencoder; each caption tokenised (by both tokenizers for SDXL) and, optionally,
/// encoded by the pipeline's own prompt encoder. Unusable items (unreadable, too small, no caption) are left out and
/// listed in <c>dataset.json</c>; they never stop the run.
/// </summary>
public sealed class DatasetPreparation(IAutoencoder autoencoder, CLIPTokenizer tokenizer, CLIPTokenizer? tokenizer2 = null,
    PromptEncoder? encodePrompts = null, Device? device = null, ScalarType? dtype = null)
{
    readonly Device device = device ?? CPU;
    readonly ScalarType dtype = dtype ?? float32;

    /// <summary>For SD1.x data: the pipeline's autoencoder, tokenizer and (with <paramref name="textEmbeddings"/>) its
    /// <see cref="StableDiffusionPipeline.EncodePrompt"/>.</summary>
    public static DatasetPreparation For(StableDiffusionPipeline pipeline, bool textEmbeddings = false) =>
        new(pipeline.Vae, pipeline.Tokenizer, null, textEmbeddings ? prompts => (pipeline.EncodePrompt(prompts), null) : null,
            pipeline.Device, pipeline.DType);

    /// <summary>For either pipeline's data.</summary>
    public static DatasetPreparation For(IDiffusionPipeline pipeline, bool textEmbeddings = false) => pipeline switch
    {
        StableDiffusionPipeline sd => For(sd, textEmbeddings),
        StableDiffusionXLPipeline xl => For(xl, textEmbeddings),
        _ => throw new NotSupportedException($"dataset preparation for {pipeline.GetType().Name}"),
    };

    /// <summary>For SDXL data: both tokenizers, and (with <paramref name="textEmbeddings"/>) the pipeline's
    /// <see cref="StableDiffusionXLPipeline.EncodePrompt"/> for prompt and pooled embeddings.</summary>
    public static DatasetPreparation For(StableDiffusionXLPipeline pipeline, bool textEmbeddings = false) =>
        new(pipeline.Vae, pipeline.Tokenizer, pipeline.Tokenizer2, textEmbeddings ? prompts => pipeline.EncodePrompt(prompts) : null,
            pipeline.Device, pipeline.DType);

    /// <summary>Writes <c>shard-00000/</c>, … and <c>dataset.json</c> into <paramref name="outputDir"/>, which must not
    /// exist yet; the work happens in <c>&lt;outputDir&gt;.partial</c>, so an interrupted run never looks finished.</summary>
    public DatasetSummary Prepare(IImageCaptionSource source, string outputDir, DatasetPreparationOptions options,
        Action<PreparationProgress>? progress = null, CancellationToken cancellation = default)
    {
        options.Validate();
        outputDir = Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputDir));
        if (Directory.Exists(outputDir)) throw new IOException($"dataset folder already exists: {outputDir}");
        var partial = outputDir + ".partial";
        if (Directory.Exists(partial)) Directory.Delete(partial, true);
        Directory.CreateDirectory(partial);

        var items = source.Items;
        var bad = new List<BadItem>();
        var batch = new List<(SourceItem Item, Tensor Image)>();
        var pending = new List<Sample>();
        var shards = new List<string>();
        using var generator = new Generator((ulong)options.Seed, device);
        void Flush(int atLeast)
        {
            if (batch.Count > 0) { pending.AddRange(Encode(batch, generator)); batch.Clear(); }
            while (pending.Count >= atLeast && pending.Count > 0)
            {
                var name = $"shard-{shards.Count:D5}";
                WriteShard(pending.Take(options.ShardSize).ToList(), Path.Combine(partial, name));
                pending.RemoveRange(0, Math.Min(options.ShardSize, pending.Count));
                shards.Add(name);
            }
        }

        for (int i = 0; i < items.Count; i++)
        {
            cancellation.ThrowIfCancellationRequested();
            var (image, problem) = Load(items[i], options.Resolution, options.MinSize ?? options.Resolution);
            if (image is null) bad.Add(new BadItem(items[i].Id, problem!));
            else batch.Add((items[i], image));
            if (batch.Count == options.BatchSize) Flush(options.ShardSize);
            progress?.Invoke(new PreparationProgress(i + 1, items.Count, bad.Count));
        }
        Flush(1);

        var summary = new DatasetSummary(source.Description, items.Count - bad.Count, bad.Count, options.Resolution,
            encodePrompts is not null, shards, bad);
        summary.Write(partial);
        Directory.Move(partial, outputDir);
        return summary;
    }

    /// <summary>The item's image as [3, resolution, resolution], or why it cannot be used.</summary>
    static (Tensor? Image, string? Problem) Load(SourceItem item, int resolution, int minSize)
    {
        if (item.Problem is not null) return (null, item.Problem);
        try
        {
            using var image = item.OpenImage();
            if (Math.Min(image.Width, image.Height) < minSize)
                return (null, $"too small: {image.Width}×{image.Height}, the shorter side must be at least {minSize} px");
            return (CenterSquare(image, resolution), null);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { return (null, "image file not found"); }
        catch (Exception e) when (e is ImageFormatException or IOException or UnauthorizedAccessException)
        {
            return (null, $"unreadable image: {e.Message}");
        }
    }

    /// <summary>The image upright (EXIF orientation), its centred square crop resized bicubically to
    /// <paramref name="resolution"/>: float32 [3, resolution, resolution] in [0, 1]. Resampling runs on float pixels,
    /// and an image already at the resolution is not resampled.</summary>
    public static Tensor CenterSquare(Image image, int resolution)
    {
        using var rgba = image.CloneAs<RgbaVector>();
        rgba.Mutate(x => x.AutoOrient());
        int side = Math.Min(rgba.Width, rgba.Height);
        if (rgba.Width != rgba.Height)
            rgba.Mutate(x => x.Crop(new Rectangle((rgba.Width - side) / 2, (rgba.Height - side) / 2, side, side)));
        if (side != resolution) rgba.Mutate(x => x.Resize(resolution, resolution, KnownResamplers.Bicubic));
        var pixels = new RgbaVector[resolution * resolution];
        rgba.CopyPixelDataTo(pixels);
        using var scope = NewDisposeScope();
        // bicubic overshoots at edges; alpha is dropped
        return tensor(MemoryMarshal.Cast<RgbaVector, float>(pixels).ToArray(), [resolution, resolution, 4])[.., .., ..3]
            .permute(2, 0, 1).clamp(0, 1).contiguous().MoveToOuterDisposeScope();
    }

    sealed record Sample(string Caption, string? Label, Tensor Latent, Tensor? PromptEmbeds, Tensor? PooledPromptEmbeds) : IDisposable
    {
        public void Dispose() { Latent.Dispose(); PromptEmbeds?.Dispose(); PooledPromptEmbeds?.Dispose(); }
    }

    /// <summary>Encodes a batch; the results are float32 rows on the CPU, what the shards store.</summary>
    List<Sample> Encode(List<(SourceItem Item, Tensor Image)> batch, Generator generator)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var images = stack(batch.Select(b => b.Image)).to(dtype, device);
        foreach (var (_, image) in batch) image.Dispose();
        var captions = batch.Select(b => b.Item.Caption).ToList();
        var latents = Rows(autoencoder.EncodeLatents(images, generator));
        Tensor[]? embeds = null, pooled = null;
        if (encodePrompts is not null)
        {
            var (e, p) = encodePrompts(captions);
            embeds = Rows(e);
            pooled = p is null ? null : Rows(p);
        }
        return batch.Select((b, i) => new Sample(b.Item.Caption, b.Item.Label, latents[i].MoveToOuterDisposeScope(),
            embeds?[i].MoveToOuterDisposeScope(), pooled?[i].MoveToOuterDisposeScope())).ToList();
    }

    static Tensor[] Rows(Tensor t) => t.to(float32, CPU).unbind(0);

    void WriteShard(List<Sample> samples, string dir)
    {
        var captions = samples.Select(s => s.Caption).ToList();
        using var shard = new LatentDataset(stack(samples.Select(s => s.Latent)), tokenizer.Encode(captions), captions,
            samples.Select(s => s.Label).ToList(), tokenizer2?.Encode(captions),
            encodePrompts is null ? null : stack(samples.Select(s => s.PromptEmbeds!)),
            samples[0].PooledPromptEmbeds is null ? null : stack(samples.Select(s => s.PooledPromptEmbeds!)));
        shard.Save(dir);
        foreach (var s in samples) s.Dispose();
    }
}
