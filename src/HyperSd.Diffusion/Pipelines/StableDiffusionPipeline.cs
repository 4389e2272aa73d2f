using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using HyperSd.Diffusion.IO;
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
    /// <summary>For the image metadata: which model made it.</summary>
    public string ModelId { get; init; } = "";
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

public sealed record LoraReference(string Id, double Scale);

/// <summary>How one image was made, written into its PNG the way other SD tools do ("parameters" as AUTOMATIC1111
/// writes it) plus a JSON chunk with every field.</summary>
public sealed record GenerationParameters(string Prompt, string NegativePrompt, int Steps, string Scheduler,
    double GuidanceScale, long Seed, int Width, int Height, string ModelId, IReadOnlyList<LoraReference> Loras, double? Eta)
{
    public Dictionary<string, string> ToPngText()
    {
        var inv = CultureInfo.InvariantCulture;
        var line = $"Steps: {Steps}, Sampler: {Scheduler}, CFG scale: {GuidanceScale.ToString(inv)}, Seed: {Seed}, Size: {Width}x{Height}";
        if (Eta is { } eta) line += $", Eta: {eta.ToString(inv)}";
        if (ModelId.Length > 0) line += $", Model: {ModelId}";
        if (Loras.Count > 0) line += $", Lora: {string.Join("; ", Loras.Select(l => $"{l.Id}:{l.Scale.ToString(inv)}"))}";
        return new()
        {
            ["parameters"] = $"{Prompt}\nNegative prompt: {NegativePrompt}\n{line}",
            ["hypersd"] = JsonSerializer.Serialize(this, Json),
        };
    }

    public static GenerationParameters FromPngText(IReadOnlyDictionary<string, string> text) =>
        JsonSerializer.Deserialize<GenerationParameters>(text["hypersd"], Json)
        ?? throw new InvalidDataException("empty 'hypersd' PNG text chunk");

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
}

/// <summary>
/// Text-to-image with a Stable Diffusion 1.x-type model (diffusers' StableDiffusionPipeline): encode the prompts,
/// denoise latents with the scheduler under classifier-free guidance, decode with the VAE.
/// Only composes: the components do the work.
/// </summary>
public sealed class StableDiffusionPipeline : IDisposable
{
    public UNet2DConditionModel Unet { get; }
    public IAutoencoder Vae { get; }
    public CLIPTextModel TextEncoder { get; }
    public CLIPTokenizer Tokenizer { get; }
    public IScheduler Scheduler { get; set; }
    public Device Device { get; }
    public ScalarType DType { get; }
    readonly List<(LoraAdapter Adapter, LoraReference Reference)> loras = [];

    public StableDiffusionPipeline(UNet2DConditionModel unet, IAutoencoder vae, CLIPTextModel textEncoder, CLIPTokenizer tokenizer,
        IScheduler scheduler, Device? device = null, ScalarType? dtype = null)
    {
        if (unet.Config.AdditionEmbedType is not null)
            throw new NotSupportedException(
                $"this UNet has addition_embed_type '{unet.Config.AdditionEmbedType}' (SDXL): it needs the SDXL pipeline's second text encoder and time ids");
        Unet = unet; Vae = vae; TextEncoder = textEncoder; Tokenizer = tokenizer; Scheduler = scheduler;
        Device = device ?? CPU;
        DType = dtype ?? float32;
        foreach (var m in new[] { unet, vae as nn.Module, textEncoder }.OfType<nn.Module>()) { m.to(Device, DType); m.eval(); }
    }

    /// <summary>Loads a diffusers pipeline folder (model_index.json with unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    /// <paramref name="scheduler"/> overrides the folder's scheduler class (e.g. "TCDScheduler").</summary>
    public static StableDiffusionPipeline FromPretrained(string dir, Device? device = null, ScalarType? dtype = null, string? scheduler = null)
    {
        var index = Path.Combine(dir, "model_index.json");
        if (!File.Exists(index)) throw new FileNotFoundException($"not a diffusers pipeline folder: {index} is missing", index);
        var components = JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        foreach (var name in new[] { "unet", "vae", "text_encoder", "tokenizer", "scheduler" })
            if (!components.ContainsKey(name)) throw new InvalidDataException($"{index}: no '{name}' component");
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
        var schedulerClass = Scheduler.GetType().Name;
        ModelConfig.Write(Path.Combine(dir, "scheduler", "scheduler_config.json"), Scheduler.Config with { ClassName = schedulerClass });
        var index = new JsonObject
        {
            ["_class_name"] = nameof(StableDiffusionPipeline),
            ["unet"] = new JsonArray("diffusers", nameof(UNet2DConditionModel)),
            ["vae"] = new JsonArray("diffusers", Vae.GetType().Name),
            ["text_encoder"] = new JsonArray("transformers", nameof(CLIPTextModel)),
            ["tokenizer"] = new JsonArray("transformers", nameof(CLIPTokenizer)),
            ["scheduler"] = new JsonArray("diffusers", schedulerClass),
        };
        File.WriteAllText(Path.Combine(dir, "model_index.json"), index.ToJsonString(ModelConfig.Json));
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
            SchedulerFactory.FromConfig(SchedulerConfig.FromJson(StableDiffusion15Schedule, scheduler, "SD1.x noise schedule")), device, dtype);
    }

    /// <summary>Attaches a LoRA file (kohya or PEFT) to the UNet with a scale; several may be active at once.</summary>
    public LoraAdapter LoadLora(string path, double scale = 1.0, string? id = null)
    {
        var adapter = LoraFormats.Load(path, Unet, Device, DType);
        adapter.Weight = scale;
        adapter.Attach(Unet);
        loras.Add((adapter, new LoraReference(id ?? Path.GetFileNameWithoutExtension(path), scale)));
        return adapter;
    }

    public void UnloadLoras()
    {
        foreach (var (adapter, _) in loras) adapter.Dispose();
        loras.Clear();
    }

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
        int n = request.Prompts.Count;
        if (n == 0) throw new ArgumentException("no prompts");
        int f = VaeScaleFactor;
        if (request.Height % f != 0 || request.Width % f != 0)
            throw new ArgumentException($"height and width must be divisible by {f}, got {request.Height}x{request.Width}");
        if (request.Steps < 1) throw new ArgumentException($"steps must be at least 1, got {request.Steps}");
        if (request.NegativePrompts is { } neg && neg.Count != n)
            throw new ArgumentException($"{neg.Count} negative prompts for {n} prompts");
        var seeds = request.Seeds ?? Enumerable.Range(0, n).Select(i => (long)i).ToList();
        if (seeds.Count != n) throw new ArgumentException($"{seeds.Count} seeds for {n} prompts");
        var negatives = request.NegativePrompts ?? Enumerable.Repeat("", n).ToList();
        bool guided = request.GuidanceScale > 1.0;

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var cond = EncodePrompt(request.Prompts);
        var context = guided ? cat([EncodePrompt(negatives), cond]) : cond;
        var generators = seeds.Select(s => new Generator((ulong)s)).ToList();

        long[] shape = [n, Unet.Config.InChannels, request.Height / f, request.Width / f];
        var latents = request.Latents?.to(float32, Device)
                      ?? stack(generators.Select(g => randn(shape[1..], generator: g))).to(Device);
        if (!latents.shape.SequenceEqual(shape))
            throw new ArgumentException($"latents have shape [{string.Join(", ", latents.shape)}], expected [{string.Join(", ", shape)}]");

        var eta = SetEta(request.Eta);
        Scheduler.SetTimesteps(request.Steps, Device);
        latents = latents * Scheduler.InitNoiseSigma;
        int draws = 0;
        foreach (var t in Scheduler.Timesteps.to(float64).data<double>().ToArray())
        {
            var input = Scheduler.ScaleModelInput(guided ? cat([latents, latents]) : latents, t);
            var timestep = full([input.shape[0]], t, dtype: float32, device: Device);
            var noisePred = Unet.forward(input.to(DType), timestep, context).to(float32);
            if (guided)
            {
                var chunks = noisePred.chunk(2);
                noisePred = chunks[0] + request.GuidanceScale * (chunks[1] - chunks[0]);
            }
            // Replayed noise when given, else each image's own generator: seeds stay independent of batching.
            var replay = request.StepNoise?.Invoke(draws)?.to(Device);
            var output = Scheduler.Step(noisePred, t, latents, noise: replay, generators: replay is null ? generators : null);
            if (output.Noise is not null) draws++;
            latents = output.PrevSample;
        }

        var images = DecodeLatents(latents);
        var parameters = Enumerable.Range(0, n).Select(i => new GenerationParameters(
            request.Prompts[i], negatives[i], request.Steps, Scheduler.GetType().Name, request.GuidanceScale, seeds[i],
            request.Width, request.Height, request.ModelId, loras.Select(l => l.Reference).ToList(), eta)).ToList();
        return new GenerationResult(images.MoveToOuterDisposeScope(), parameters);
    }

    double? SetEta(double? eta)
    {
        switch (Scheduler)
        {
            case TCDScheduler tcd: tcd.Eta = eta ?? tcd.Eta; return tcd.Eta;
            case DDIMScheduler ddim: ddim.Eta = eta ?? ddim.Eta; return ddim.Eta;
            default:
                if (eta is not null) throw new ArgumentException($"{Scheduler.GetType().Name} takes no eta");
                return null;
        }
    }

    /// <summary>Latents → images in [0, 1].</summary>
    public Tensor DecodeLatents(Tensor latents)
    {
        using var _ = no_grad();
        using var decoded = Vae.DecodeLatents(latents.to(DType));
        return decoded.to(float32);
    }

    public void Dispose()
    {
        UnloadLoras();
        Unet.Dispose(); (Vae as IDisposable)?.Dispose(); TextEncoder.Dispose();
    }
}
