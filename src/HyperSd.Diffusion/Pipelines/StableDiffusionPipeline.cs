using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Loaders.SingleFile;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Pipelines;

/// <summary>What to generate. Seeds are per image: image i starts from its own generator, so an image is reproducible
/// from its seed whatever batch it was made in.</summary>
public sealed record GenerationRequest
{
    public required IReadOnlyList<string> Prompts { get; init; }
    /// <summary>One per prompt, or null for the empty negative prompt.</summary>
    public IReadOnlyList<string>? NegativePrompts { get; init; }
    public int Steps { get; init; } = 4;
    /// <summary>Classifier-free guidance; at 1 or below, the unconditional pass is skipped.</summary>
    public double GuidanceScale { get; init; } = 1.0;
    public int Height { get; init; } = 512;
    public int Width { get; init; } = 512;
    /// <summary>One per prompt; default 0, 1, 2, …</summary>
    public IReadOnlyList<long>? Seeds { get; init; }
    /// <summary>Initial latents instead of seeded noise (scaled by the scheduler's initial sigma as diffusers does).</summary>
    public Tensor? Latents { get; init; }
    /// <summary>Replays the scheduler's noise: the j-th stochastic step's noise, when given.</summary>
    public Func<int, Tensor?>? StepNoise { get; init; }
    /// <summary>DDIM's η or TCD's γ; null keeps the scheduler's own setting.</summary>
    public double? Eta { get; init; }
    /// <summary>For the image metadata: which model made it (the caller knows where it came from and its hash).</summary>
    public ModelReference Model { get; init; } = new("");
}

/// <summary>The generated images ([N, 3, H, W] in [0, 1]) and, per image, the parameters that reproduce it.</summary>
public sealed record GenerationResult(Tensor Images, IReadOnlyList<GenerationParameters> Parameters) : IDisposable
{
    /// <summary>Writes one PNG per image with its parameters as PNG text; returns the paths.</summary>
    public IReadOnlyList<string> SavePngs(string dir, string prefix = "image")
    {
        var paths = new List<string>();
        for (int i = 0; i < Parameters.Count; i++)
        {
            var path = Path.Combine(dir, $"{prefix}-{i:D4}-{Parameters[i].Seed}.png");
            ImageFiles.SavePng(Images[i], path, Parameters[i].ToPngText());
            paths.Add(path);
        }
        return paths;
    }

    public void Dispose() => Images.Dispose();
}

/// <summary>A model an image was made with: a name, where it was loaded from (a diffusers folder or a single-file
/// checkpoint with its tokenizer folder) and the sha256 of that file or folder (folder: over its files' sorted
/// relative paths and hashes), so a regeneration can check it has the same weights.</summary>
public sealed record ModelReference(string Id, string? Path = null, string? Sha256 = null, string? Tokenizer = null);

/// <summary>A LoRA an image was made with: its id, scale, file, the file's sha256 and A1111's short hash ("AutoV3":
/// sha256 of the safetensors file after its header, first 12 hex digits: what "Lora hashes" lists).</summary>
public sealed record LoraReference(string Id, double Scale, string? Path = null, string? Sha256 = null, string? AutoV3 = null);

/// <summary>The sampler an image was made with: the scheduler class, its timestep spacing and its η (DDIM) or γ (TCD),
/// on top of the model's own noise schedule.</summary>
public sealed record SchedulerSettings(string Class, string TimestepSpacing, double? Eta);

/// <summary>How one image was made, written into its PNG the way other SD tools do ("parameters" as AUTOMATIC1111
/// writes it) plus a JSON chunk with every field: enough to make the image again.</summary>
public sealed record GenerationParameters(string Prompt, string NegativePrompt, int Steps, SchedulerSettings Scheduler,
    double GuidanceScale, long Seed, int Width, int Height, ModelReference Model, IReadOnlyList<LoraReference> Loras)
{
    public const string JsonKey = "hypersd";

    public Dictionary<string, string> ToPngText()
    {
        var inv = CultureInfo.InvariantCulture;
        var line = $"Steps: {Steps}, Sampler: {A1111Sampler(Scheduler.Class)}, Schedule type: {Scheduler.TimestepSpacing}, " +
                   $"CFG scale: {GuidanceScale.ToString(inv)}, Seed: {Seed}, Size: {Width}x{Height}";
        if (Scheduler.Eta is { } eta) line += $", Eta: {eta.ToString(inv)}";
        if (Model.Sha256 is { Length: >= 10 } modelHash) line += $", Model hash: {modelHash[..10]}";
        if (Model.Id.Length > 0) line += $", Model: {Model.Id}";
        if (Loras.Count > 0)
        {
            line += $", Lora: {string.Join("; ", Loras.Select(l => $"{l.Id}:{l.Scale.ToString(inv)}"))}";
            // A1111's own quoting: "name: hash, name: hash"
            line += $", Lora hashes: \"{string.Join(", ", Loras.Select(l => $"{l.Id}: {l.AutoV3 ?? "unknown"}"))}\"";
        }
        return new()
        {
            ["parameters"] = $"{Prompt}\nNegative prompt: {NegativePrompt}\n{line}",
            [JsonKey] = JsonSerializer.Serialize(this, Json),
        };
    }

    /// <summary>A1111's sampler names for the schedulers it shares; others by class.</summary>
    static string A1111Sampler(string schedulerClass) => schedulerClass switch
    {
        "DDIMScheduler" => "DDIM",
        "LCMScheduler" => "LCM",
        "EulerDiscreteScheduler" => "Euler",
        "TCDScheduler" => "TCD",
        _ => schedulerClass,
    };

    public static GenerationParameters FromPngText(IReadOnlyDictionary<string, string> text) =>
        text.TryGetValue(JsonKey, out var json)
            ? JsonSerializer.Deserialize<GenerationParameters>(json, Json) ?? throw new InvalidDataException(
                $"empty '{JsonKey}' PNG text chunk")
            : throw new InvalidDataException($"the PNG has no '{JsonKey}' text chunk (not made by hypersd)");

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
}

/// <summary>
/// Text-to-image with a Stable Diffusion 1.x-type model (diffusers' StableDiffusionPipeline): encode the prompts,
/// denoise latents with the scheduler under classifier-free guidance, decode with the VAE.
/// Only composes: the components do the work.
/// </summary>
public sealed class StableDiffusionPipeline : IDiffusionPipeline
{
    public UNet2DConditionModel Unet { get; }
    public IAutoencoder Vae { get; }
    public CLIPTextModel TextEncoder { get; }
    public CLIPTokenizer Tokenizer { get; }
    public IScheduler Scheduler { get; set; }
    public Device Device { get; }
    public ScalarType DType { get; }
    readonly PipelineLoras loras = new();

    public StableDiffusionPipeline(UNet2DConditionModel unet, IAutoencoder vae, CLIPTextModel textEncoder, CLIPTokenizer tokenizer,
        IScheduler scheduler, Device? device = null, ScalarType? dtype = null)
    {
        if (unet.Config.AdditionEmbedType is not null)
            throw new NotSupportedException(
                $"this UNet has addition_embed_type '{unet.Config.AdditionEmbedType}' (SDXL): " +
                "it needs the SDXL pipeline's second text encoder and time ids");
        Unet = unet; Vae = vae; TextEncoder = textEncoder; Tokenizer = tokenizer; Scheduler = scheduler;
        Device = device ?? CPU;
        DType = dtype ?? float32;
        foreach (var m in new[] { unet, vae as nn.Module, textEncoder }.OfType<nn.Module>()) { m.to(Device, DType); m.eval(); }
    }

    /// <summary>Loads a diffusers pipeline folder (model_index.json with unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    /// <paramref name="scheduler"/> overrides the folder's scheduler class (e.g. "TCDScheduler").</summary>
    public static StableDiffusionPipeline FromPretrained(
        string dir, Device? device = null, ScalarType? dtype = null, string? scheduler = null)
    {
        TextToImage.ReadModelIndex(dir, "unet", "vae", "text_encoder", "tokenizer", "scheduler");
        return new StableDiffusionPipeline(
            UNet2DConditionModel.FromPretrained(Path.Combine(dir, "unet"), device, dtype),
            Autoencoders.FromPretrained(Path.Combine(dir, "vae"), device, dtype),
            CLIPTextModel.FromPretrained(Path.Combine(dir, "text_encoder"), device, dtype),
            CLIPTokenizer.FromPretrained(Path.Combine(dir, "tokenizer")),
            SchedulerFactory.FromPretrained(Path.Combine(dir, "scheduler"), scheduler), device, dtype);
    }

    /// <summary>Writes the pipeline in the diffusers folder layout (model_index.json and one folder per component).</summary>
    public void SavePretrained(string dir)
    {
        Unet.SavePretrained(Path.Combine(dir, "unet"));
        Vae.SavePretrained(Path.Combine(dir, "vae"));
        TextEncoder.SavePretrained(Path.Combine(dir, "text_encoder"));
        Tokenizer.SavePretrained(Path.Combine(dir, "tokenizer"));
        TextToImage.SaveSchedulerAndIndex(dir, Scheduler, nameof(StableDiffusionPipeline), new JsonObject
        {
            ["unet"] = new JsonArray("diffusers", nameof(UNet2DConditionModel)),
            ["vae"] = new JsonArray("diffusers", Vae.GetType().Name),
            ["text_encoder"] = new JsonArray("transformers", nameof(CLIPTextModel)),
            ["tokenizer"] = new JsonArray("transformers", nameof(CLIPTokenizer)),
        });
    }

    /// <summary>SD1.x's noise schedule (its scheduler_config.json), for checkpoints that come without one.</summary>
    public static JsonObject StableDiffusion15Schedule => new()
    {
        ["_class_name"] = "DDIMScheduler", ["num_train_timesteps"] = 1000, ["beta_start"] = 0.00085, ["beta_end"] = 0.012,
        ["beta_schedule"] = "scaled_linear", ["clip_sample"] = false, ["set_alpha_to_one"] = false, ["steps_offset"] = 1,
        ["prediction_type"] = "epsilon",
    };

    /// <summary>Loads an original single-file SD1.x checkpoint (.safetensors) with a CLIP tokenizer folder
    /// (vocab.json + merges.txt, which such files lack) and SD1.x's noise schedule.</summary>
    public static StableDiffusionPipeline FromSingleFile(string path, string tokenizerDir, string scheduler = "DDIMScheduler",
        SingleFileConfigs? configs = null, Device? device = null, ScalarType? dtype = null)
    {
        var tokenizer = CLIPTokenizer.FromPretrained(tokenizerDir);
        var models = StableDiffusionSingleFile.Load(path, configs, device, dtype);
        return new StableDiffusionPipeline(models.Unet, models.Vae, models.TextEncoder, tokenizer,
            SchedulerFactory.FromConfig(SchedulerConfig.FromJson(StableDiffusion15Schedule, scheduler, "SD1.x noise schedule")),
            device, dtype);
    }

    /// <summary>Attaches a LoRA file (kohya or PEFT) to the UNet with a scale; several may be active at once.</summary>
    public LoraAdapter LoadLora(string path, double scale = 1.0, string? id = null) => loras.Load(Unet, path, scale, id, Device, DType);

    public void UnloadLoras() => loras.Unload();

    PromptConditioner? conditioner;

    /// <summary>The trainers' view of the text side: token ids [N, tokens] → the last hidden state.</summary>
    public PromptConditioner Conditioner => conditioner ??= new CLIPPromptConditioner(TextEncoder, Tokenizer.Encode([""]));

    /// <summary>This pipeline with another UNet (a fully fine-tuned student); it shares every other component, so dispose
    /// only the original.</summary>
    public IDiffusionPipeline WithUnet(UNet2DConditionModel unet) =>
        new StableDiffusionPipeline(unet, Vae, TextEncoder, Tokenizer, Scheduler, Device, DType);

    /// <summary>Text embeddings (last hidden state) for prompts, truncated/padded to the tokenizer's length.</summary>
    public Tensor EncodePrompt(IReadOnlyList<string> prompts)
    {
        using var _ = no_grad();
        using var ids = Tokenizer.Encode(prompts);
        using var output = TextEncoder.call(ids.to(Device));
        return output.LastHiddenState.alias();
    }

    public int VaeScaleFactor => Vae.ScaleFactor;

    public GenerationResult Generate(GenerationRequest request)
    {
        var (seeds, negatives) = TextToImage.Check(request, VaeScaleFactor);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var cond = EncodePrompt(request.Prompts);
        var context = TextToImage.Guided(request) ? cat([EncodePrompt(negatives), cond]) : cond;
        var eta = TextToImage.SetEta(Scheduler, request.Eta);
        var latents = TextToImage.Denoise(Unet, Scheduler, request, seeds, VaeScaleFactor, context, null, Device, DType);
        var images = DecodeLatents(latents);
        var parameters = TextToImage.Parameters(request, seeds, negatives, Scheduler, loras.References, eta);
        return new GenerationResult(images.MoveToOuterDisposeScope(), parameters);
    }

    /// <summary>Latents → images in [0, 1].</summary>
    public Tensor DecodeLatents(Tensor latents) => TextToImage.Decode(Vae, latents, DType);

    public void Dispose()
    {
        UnloadLoras();
        conditioner?.EmptyPromptIds.Dispose();
        Unet.Dispose(); (Vae as IDisposable)?.Dispose(); TextEncoder.Dispose();
    }
}
