using System.Collections.Concurrent;
using HyperSd.Data.Artifacts;
using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Services.Generator;

/// <summary>
/// The models images are made with, as their PNGs record them: opening a model by path, describing it (id, path,
/// sha256) for the images' parameters, and making an image again from its own PNG text.
/// </summary>
public static class ImageModels
{
    /// <summary>The name the embedded toy teacher is recorded under.</summary>
    public const string ToyId = "toy";

    /// <summary>A model as the CLI names it: "toy" (the embedded toy teacher), or a path; its id and path.</summary>
    public static (string Id, string Path) Resolve(string model) =>
        model == ToyId ? (ToyId, ToyWorld.PretrainedTeacherDir) : (System.IO.Path.GetFileName(System.IO.Path.TrimEndingDirectorySeparator(
            model)), model);

    /// <summary>A diffusers folder (SD1.x or SDXL, by its model_index.json) or a single-file SD1.x checkpoint, which
    /// needs a tokenizer folder.</summary>
    public static IDiffusionPipeline Open(string path, string? tokenizer, Device device, ScalarType dtype) =>
        File.Exists(path)
            ? StableDiffusionPipeline.FromSingleFile(path,
                tokenizer ?? throw new ArgumentException($"{path}: a single-file checkpoint needs a tokenizer folder (--tokenizer)"),
                device: device, dtype: dtype)
            : DiffusionPipeline.FromPretrained(path, device, dtype);

    /// <summary>The model's reference for the images' parameters; the hash is over the file, or the folder's files.</summary>
    public static async Task<ModelReference> DescribeAsync(string id, string path, string? tokenizer, CancellationToken ct = default) =>
        new(id, Path.GetFullPath(path), await Sha256Async(path, ct), tokenizer is null ? null : Path.GetFullPath(tokenizer));

    static readonly ConcurrentDictionary<string, (string Signature, string Sha256)> Hashes = new();

    /// <summary>The sha256 of a file or folder (<see cref="ContentHash"/>), remembered while its files' sizes and write
    /// times stay the same: a generator opens the same model for every chunk, and a real model's hash takes seconds.</summary>
    static async Task<string> Sha256Async(string path, CancellationToken ct)
    {
        var full = Path.GetFullPath(path);
        IEnumerable<string> files = File.Exists(full) ? [full] : Directory.EnumerateFiles(full, "*", SearchOption.AllDirectories).Order(
            StringComparer.Ordinal);
        var signature = string.Join("\n", files.Select(f => $"{f}\0{new FileInfo(f).Length}\0{File.GetLastWriteTimeUtc(f).Ticks}"));
        if (Hashes.TryGetValue(full, out var known) && known.Signature == signature) return known.Sha256;
        var sha256 = (await ContentHash.OfAsync(full, ct)).Sha256;
        Hashes[full] = (signature, sha256);
        return sha256;
    }

    /// <summary>Opens the model a PNG names, after checking its weights are the ones the image was made with. The toy
    /// teacher is found where this build has it when its recorded path is elsewhere.</summary>
    public static async Task<IDiffusionPipeline> OpenRecordedAsync(ModelReference model, Device device, ScalarType dtype,
        CancellationToken ct = default)
    {
        if (model.Path is null || model.Sha256 is null)
            throw new InvalidDataException($"the image's model '{model.Id}' has no recorded path and hash (a fully fine-tuned " +
                                           "student's UNet is not recorded), so the image cannot be made again from its text");
        var path = model.Path;
        if (!Path.Exists(path) && model.Id == ToyId) path = ToyWorld.PretrainedTeacherDir;
        if (!Path.Exists(path)) throw new FileNotFoundException($"the image's model '{model.Id}' is not at {model.Path}", model.Path);
        var sha256 = await Sha256Async(path, ct);
        if (sha256 != model.Sha256)
            throw new InvalidDataException($"the model at {path} has sha256 {sha256}, the image was made with {model.Sha256}");
        return Open(path, model.Tokenizer, device, dtype);
    }

    /// <summary>Makes the image of <paramref name="png"/> again from its own parameters (model, LoRAs, scheduler and its
    /// settings, prompt, seed, size) into <paramref name="outDir"/> under the same file name; returns that path.</summary>
    public static async Task<string> RegenerateAsync(string png, string outDir, Device device, ScalarType dtype,
        CancellationToken ct = default)
    {
        var p = GenerationParameters.FromPngText(ImageFiles.ReadPngText(png));
        using var pipeline = await OpenRecordedAsync(p.Model, device, dtype, ct);
        pipeline.Scheduler = new SamplerSpec(p.Scheduler.Class, p.Scheduler.Class, p.Scheduler.TimestepSpacing, p.Scheduler.Eta,
            p.GuidanceScale).Build(pipeline.Scheduler.Config);
        foreach (var lora in p.Loras)
        {
            if (lora.Path is null || !File.Exists(lora.Path))
                throw new FileNotFoundException($"the image's LoRA '{lora.Id}' is not at {lora.Path}", lora.Path);
            var sha256 = await ContentHash.OfFileAsync(lora.Path, ct);
            if (sha256 != lora.Sha256)
                throw new InvalidDataException($"the LoRA at {lora.Path} has sha256 {sha256}, the image was made with {lora.Sha256}");
            pipeline.LoadLora(lora.Path, lora.Scale, lora.Id);
        }
        var file = Path.GetFileName(png);
        BatchGeneration.Run(pipeline.Generate, [new GenerationItem(file, p.Prompt, p.Seed)], outDir,
            new GenerationRequest
            {
                Prompts = [], Steps = p.Steps, GuidanceScale = p.GuidanceScale, Eta = p.Scheduler.Eta, Height = p.Height, Width = p.Width,
                Model = p.Model,
            }, batchSize: 1, resume: false, p.NegativePrompt, cancellationToken: ct);
        return Path.Combine(outDir, file);
    }
}
