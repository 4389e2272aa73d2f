using System.Security.Cryptography;
using System.Text.Json.Nodes;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Pipelines;

/// <summary>What the text-to-image pipelines share once the prompts are encoded: checking the request, the denoising
/// loop with classifier-free guidance, decoding, the images' parameters and the diffusers folder layout.</summary>
internal static class TextToImage
{
    /// <summary>Classifier-free guidance; at 1 or below the unconditional pass is skipped.</summary>
    public static bool Guided(GenerationRequest request) => request.GuidanceScale > 1.0;

    /// <summary>Throws on a malformed request; returns the per-image seeds and negative prompts ("" when none).</summary>
    public static (IReadOnlyList<long> Seeds, IReadOnlyList<string> Negatives) Check(GenerationRequest request, int vaeScaleFactor)
    {
        int n = request.Prompts.Count;
        if (n == 0) throw new ArgumentException("no prompts");
        int f = vaeScaleFactor;
        if (request.Height % f != 0 || request.Width % f != 0)
            throw new ArgumentException($"height and width must be divisible by {f}, got {request.Height}x{request.Width}");
        if (request.Steps < 1) throw new ArgumentException($"steps must be at least 1, got {request.Steps}");
        if (request.NegativePrompts is { } neg && neg.Count != n)
            throw new ArgumentException($"{neg.Count} negative prompts for {n} prompts");
        var seeds = request.Seeds ?? Enumerable.Range(0, n).Select(i => (long)i).ToList();
        if (seeds.Count != n) throw new ArgumentException($"{seeds.Count} seeds for {n} prompts");
        return (seeds, request.NegativePrompts ?? Enumerable.Repeat("", n).ToList());
    }

    /// <summary>Runs the scheduler from seeded noise (or the request's latents) to clean latents. Under guidance,
    /// <paramref name="context"/> and <paramref name="added"/> hold the unconditional half first, as diffusers concatenates.</summary>
    public static Tensor Denoise(UNet2DConditionModel unet, IScheduler scheduler, GenerationRequest request, IReadOnlyList<long> seeds,
        int vaeScaleFactor, Tensor context, UNetAddedConditions? added, Device device, ScalarType dtype)
    {
        bool guided = Guided(request);
        var generators = seeds.Select(s => new Generator((ulong)s)).ToList();
        long[] shape = [seeds.Count, unet.Config.InChannels, request.Height / vaeScaleFactor, request.Width / vaeScaleFactor];
        var latents = request.Latents?.to(float32, device)
                      ?? stack(generators.Select(g => randn(shape[1..], generator: g))).to(device);
        if (!latents.shape.SequenceEqual(shape))
            throw new ArgumentException($"latents have shape [{string.Join(", ", latents.shape)}], expected [{string.Join(", ", shape)}]");

        scheduler.SetTimesteps(request.Steps, device);
        latents = latents * scheduler.InitNoiseSigma;
        int draws = 0;
        foreach (var t in scheduler.Timesteps.to(float64).data<double>().ToArray())
        {
            var input = scheduler.ScaleModelInput(guided ? cat([latents, latents]) : latents, t);
            var timestep = full([input.shape[0]], t, dtype: float32, device: device);
            var noisePred = unet.forward(input.to(dtype), timestep, context, added).to(float32);
            if (guided)
            {
                var chunks = noisePred.chunk(2);
                noisePred = chunks[0] + request.GuidanceScale * (chunks[1] - chunks[0]);
            }
            // Replayed noise when given, else each image's own generator: seeds stay independent of batching.
            var replay = request.StepNoise?.Invoke(draws)?.to(device);
            var output = scheduler.Step(noisePred, t, latents, noise: replay, generators: replay is null ? generators : null);
            if (output.Noise is not null) draws++;
            latents = output.PrevSample;
        }
        return latents;
    }

    /// <summary>Applies the request's η (DDIM) or γ (TCD) and returns the value in effect.</summary>
    public static double? SetEta(IScheduler scheduler, double? eta)
    {
        switch (scheduler)
        {
            case TCDScheduler tcd: tcd.Eta = eta ?? tcd.Eta; return tcd.Eta;
            case DDIMScheduler ddim: ddim.Eta = eta ?? ddim.Eta; return ddim.Eta;
            default:
                if (eta is not null) throw new ArgumentException($"{scheduler.GetType().Name} takes no eta");
                return null;
        }
    }

    /// <summary>Latents → images in [0, 1] (float32).</summary>
    public static Tensor Decode(IAutoencoder vae, Tensor latents, ScalarType dtype)
    {
        using var _ = no_grad();
        using var decoded = vae.DecodeLatents(latents.to(dtype));
        return decoded.to(float32);
    }

    public static List<GenerationParameters> Parameters(GenerationRequest request, IReadOnlyList<long> seeds,
        IReadOnlyList<string> negatives, IScheduler scheduler, IReadOnlyList<LoraReference> loras, double? eta) =>
        Enumerable.Range(0, seeds.Count).Select(i => new GenerationParameters(
            request.Prompts[i], negatives[i], request.Steps,
            new SchedulerSettings(scheduler.GetType().Name, scheduler.Config.TimestepSpacing, eta), request.GuidanceScale, seeds[i],
            request.Width, request.Height, request.Model, loras)).ToList();

    /// <summary>Reads a pipeline folder's model_index.json, checking that it lists <paramref name="components"/>.</summary>
    public static JsonObject ReadModelIndex(string dir, params string[] components)
    {
        var index = Path.Combine(dir, "model_index.json");
        if (!File.Exists(index)) throw new FileNotFoundException($"not a diffusers pipeline folder: {index} is missing", index);
        var json = JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        foreach (var name in components)
            if (!json.ContainsKey(name)) throw new InvalidDataException($"{index}: no '{name}' component");
        return json;
    }

    /// <summary>Writes scheduler/scheduler_config.json and model_index.json (the pipeline class, the scheduler and
    /// <paramref name="index"/>'s other entries).</summary>
    public static void SaveSchedulerAndIndex(string dir, IScheduler scheduler, string pipelineClass, JsonObject index)
    {
        var schedulerClass = scheduler.GetType().Name;
        ModelConfig.Write(Path.Combine(dir, "scheduler", "scheduler_config.json"), scheduler.Config with { ClassName = schedulerClass });
        var json = new JsonObject { ["_class_name"] = pipelineClass };
        foreach (var (key, value) in index) json[key] = value?.DeepClone();
        json["scheduler"] = new JsonArray("diffusers", schedulerClass);
        File.WriteAllText(Path.Combine(dir, "model_index.json"), json.ToJsonString(ModelConfig.Json));
    }
}

/// <summary>The LoRAs attached to a pipeline's UNet, with the references its images record.</summary>
internal sealed class PipelineLoras
{
    readonly List<(LoraAdapter Adapter, LoraReference Reference)> loras = [];

    public IReadOnlyList<LoraReference> References => loras.Select(l => l.Reference).ToList();

    public LoraAdapter Load(UNet2DConditionModel unet, string path, double scale, string? id, Device device, ScalarType dtype)
    {
        var adapter = LoraFormats.Load(path, unet, device, dtype);
        adapter.Weight = scale;
        adapter.Attach(unet);
        var (sha256, autoV3) = Hashes(path);
        loras.Add((adapter, new LoraReference(id ?? Path.GetFileNameWithoutExtension(path), scale, Path.GetFullPath(path), sha256,
            autoV3)));
        return adapter;
    }

    /// <summary>The file's sha256 and A1111's AutoV3 (sha256 of what follows the safetensors header, 12 hex digits),
    /// in one read.</summary>
    static (string Sha256, string AutoV3) Hashes(string path)
    {
        using var file = File.OpenRead(path);
        using var whole = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var body = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var head = new byte[8];
        file.ReadExactly(head);
        whole.AppendData(head);
        long headerLength = BitConverter.ToInt64(head);
        long offset = 8, bodyStart = 8 + headerLength;
        var buffer = new byte[1 << 20];
        int read;
        while ((read = file.Read(buffer)) > 0)
        {
            whole.AppendData(buffer, 0, read);
            int skip = (int)Math.Clamp(bodyStart - offset, 0, read);
            body.AppendData(buffer, skip, read - skip);
            offset += read;
        }
        return (Convert.ToHexStringLower(whole.GetHashAndReset()), Convert.ToHexStringLower(body.GetHashAndReset())[..12]);
    }

    public void Unload()
    {
        foreach (var (adapter, _) in loras) adapter.Dispose();
        loras.Clear();
    }
}
