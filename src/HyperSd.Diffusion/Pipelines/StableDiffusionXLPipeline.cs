using System.Text.Json.Nodes;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Pipelines;

/// <summary>SDXL's size conditioning (diffusers' original_size, crops_coords_top_left and target_size, as (height, width)
/// and (top, left)); a null size is the generated image's size.</summary>
public sealed record SizeConditioning((int Height, int Width)? OriginalSize = null, (int Top, int Left) CropsCoordsTopLeft = default,
    (int Height, int Width)? TargetSize = null)
{
    /// <summary>diffusers' add_time_ids: original size, crop top-left, target size.</summary>
    public int[] TimeIds(int height, int width)
    {
        var original = OriginalSize ?? (height, width);
        var target = TargetSize ?? (height, width);
        return [original.Height, original.Width, CropsCoordsTopLeft.Top, CropsCoordsTopLeft.Left, target.Height, target.Width];
    }
}

/// <summary>
/// Text-to-image with a Stable Diffusion XL model (diffusers' StableDiffusionXLPipeline): two CLIP text encoders whose
/// penultimate hidden states, concatenated, are the UNet's context; the second one's projected pooled output and the
/// size conditioning ("time ids") feed the UNet's added embedding. Guidance, seeds and the loop are the SD1.x pipeline's.
/// </summary>
public sealed class StableDiffusionXLPipeline : IDiffusionPipeline
{
    /// <summary>Time ids per image: original (h, w), crop (top, left), target (h, w).</summary>
    const int TimeIdCount = 6;

    public UNet2DConditionModel Unet { get; }
    public IAutoencoder Vae { get; }
    public CLIPTextModel TextEncoder { get; }
    public CLIPTextModelWithProjection TextEncoder2 { get; }
    public CLIPTokenizer Tokenizer { get; }
    public CLIPTokenizer Tokenizer2 { get; }
    public IScheduler Scheduler { get; set; }
    /// <summary>An empty negative prompt conditions on zeros rather than on the encoded empty string (SDXL's config: true).</summary>
    public bool ForceZerosForEmptyPrompt { get; }
    public Device Device { get; }
    public ScalarType DType { get; }
    readonly PipelineLoras loras = new();

    public StableDiffusionXLPipeline(UNet2DConditionModel unet, IAutoencoder vae, CLIPTextModel textEncoder,
        CLIPTextModelWithProjection textEncoder2, CLIPTokenizer tokenizer, CLIPTokenizer tokenizer2, IScheduler scheduler,
        bool forceZerosForEmptyPrompt = true, Device? device = null, ScalarType? dtype = null)
    {
        var c = unet.Config;
        if (c.AdditionEmbedType != "text_time")
            throw new NotSupportedException($"{nameof(StableDiffusionXLPipeline)} needs an SDXL UNet (addition_embed_type 'text_time'), " +
                                            $"this one has addition_embed_type {(c.AdditionEmbedType is { } t ? $"'{t}'" : "null")}: " +
                                            $"use {nameof(StableDiffusionPipeline)}");
        int width = textEncoder.Config.HiddenSize + textEncoder2.Config.HiddenSize;
        if (c.CrossAttentionDim.Values.Any(d => d != width))
            throw new ArgumentException($"the UNet's cross_attention_dim is {string.Join(", ", c.CrossAttentionDim.Values)} " +
                                        $"but the text encoders' hidden sizes add to {width} " +
                                        $"({textEncoder.Config.HiddenSize} + {textEncoder2.Config.HiddenSize})");
        // diffusers' _get_add_time_ids check
        int added = c.AdditionTimeEmbedDim!.Value * TimeIdCount + textEncoder2.Config.ProjectionDim;
        if (added != c.ProjectionClassEmbeddingsInputDim)
            throw new ArgumentException($"the UNet's projection_class_embeddings_input_dim is {c.ProjectionClassEmbeddingsInputDim} but " +
                                        $"{TimeIdCount} time ids × addition_time_embed_dim {c.AdditionTimeEmbedDim} + " +
                                        $"text_encoder_2's projection_dim {textEncoder2.Config.ProjectionDim} = {added}");
        if (tokenizer.ModelMaxLength != tokenizer2.ModelMaxLength)
            throw new ArgumentException(
                $"the tokenizers' model_max_length differ ({tokenizer.ModelMaxLength} and {tokenizer2.ModelMaxLength}): " +
                "their states are concatenated per token");
        Unet = unet; Vae = vae; TextEncoder = textEncoder; TextEncoder2 = textEncoder2; Tokenizer = tokenizer; Tokenizer2 = tokenizer2;
        Scheduler = scheduler; ForceZerosForEmptyPrompt = forceZerosForEmptyPrompt;
        Device = device ?? CPU;
        DType = dtype ?? float32;
        foreach (var m in new[] { unet, vae as nn.Module, textEncoder, textEncoder2 }.OfType<nn.Module>())
        {
            m.to(Device, DType); m.eval();
        }
        conditioner = new SdxlPromptConditioner(textEncoder, textEncoder2, TokenIds([""]), VaeScaleFactor, forceZerosForEmptyPrompt);
    }

    static readonly string[] Components = ["unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"];

    /// <summary>Loads a diffusers SDXL pipeline folder (model_index.json with unet/, vae/, text_encoder/, text_encoder_2/,
    /// tokenizer/, tokenizer_2/, scheduler/). <paramref name="scheduler"/> overrides the folder's scheduler class.</summary>
    public static StableDiffusionXLPipeline FromPretrained(
        string dir, Device? device = null, ScalarType? dtype = null, string? scheduler = null)
    {
        var index = TextToImage.ReadModelIndex(dir, Components);
        bool forceZeros = index["force_zeros_for_empty_prompt"] switch
        {
            null => true, // diffusers' default
            JsonValue v when v.TryGetValue<bool>(out var value) => value,
            var other => throw new InvalidDataException(
                $"{Path.Combine(dir, "model_index.json")}: force_zeros_for_empty_prompt must be true or false, got {other.ToJsonString()}"),
        };
        return new StableDiffusionXLPipeline(
            UNet2DConditionModel.FromPretrained(Path.Combine(dir, "unet"), device, dtype),
            Autoencoders.FromPretrained(Path.Combine(dir, "vae"), device, dtype),
            CLIPTextModel.FromPretrained(Path.Combine(dir, "text_encoder"), device, dtype),
            CLIPTextModelWithProjection.FromPretrained(Path.Combine(dir, "text_encoder_2"), device, dtype),
            CLIPTokenizer.FromPretrained(Path.Combine(dir, "tokenizer")),
            CLIPTokenizer.FromPretrained(Path.Combine(dir, "tokenizer_2")),
            SchedulerFactory.FromPretrained(Path.Combine(dir, "scheduler"), scheduler), forceZeros, device, dtype);
    }

    /// <summary>Writes the pipeline in the diffusers folder layout (model_index.json and one folder per component).</summary>
    public void SavePretrained(string dir)
    {
        Unet.SavePretrained(Path.Combine(dir, "unet"));
        Vae.SavePretrained(Path.Combine(dir, "vae"));
        TextEncoder.SavePretrained(Path.Combine(dir, "text_encoder"));
        TextEncoder2.SavePretrained(Path.Combine(dir, "text_encoder_2"));
        Tokenizer.SavePretrained(Path.Combine(dir, "tokenizer"));
        Tokenizer2.SavePretrained(Path.Combine(dir, "tokenizer_2"));
        TextToImage.SaveSchedulerAndIndex(dir, Scheduler, nameof(StableDiffusionXLPipeline), new JsonObject
        {
            ["force_zeros_for_empty_prompt"] = ForceZerosForEmptyPrompt,
            ["unet"] = new JsonArray("diffusers", nameof(UNet2DConditionModel)),
            ["vae"] = new JsonArray("diffusers", Vae.GetType().Name),
            ["text_encoder"] = new JsonArray("transformers", nameof(CLIPTextModel)),
            ["text_encoder_2"] = new JsonArray("transformers", nameof(CLIPTextModelWithProjection)),
            ["tokenizer"] = new JsonArray("transformers", nameof(CLIPTokenizer)),
            ["tokenizer_2"] = new JsonArray("transformers", nameof(CLIPTokenizer)),
        });
    }

    /// <summary>Attaches a LoRA file (kohya or PEFT) to the UNet with a scale; several may be active at once.</summary>
    public LoraAdapter LoadLora(string path, double scale = 1.0, string? id = null) => loras.Load(Unet, path, scale, id, Device, DType);

    public void UnloadLoras() => loras.Unload();

    readonly SdxlPromptConditioner conditioner;

    /// <summary>The trainers' view of the text side: both tokenizers' ids [N, 2, tokens] → context, pooled embedding
    /// and time ids.</summary>
    public PromptConditioner Conditioner => conditioner;

    /// <summary>Both tokenizers' ids, [N, 2, tokens] (how SDXL datasets' captions reach <see cref="Conditioner"/>).</summary>
    public Tensor TokenIds(IReadOnlyList<string> prompts)
    {
        using var ids = Tokenizer.Encode(prompts);
        using var ids2 = Tokenizer2.Encode(prompts);
        return stack([ids, ids2], 1);
    }

    /// <summary>This pipeline with another UNet (a fully fine-tuned student); it shares every other component, so dispose
    /// only the original.</summary>
    public IDiffusionPipeline WithUnet(UNet2DConditionModel unet) => new StableDiffusionXLPipeline(unet, Vae, TextEncoder, TextEncoder2,
        Tokenizer, Tokenizer2, Scheduler, ForceZerosForEmptyPrompt, Device, DType);

    GenerationResult IDiffusionPipeline.Generate(GenerationRequest request) => Generate(request);

    /// <summary>diffusers' encode_prompt for one prompt list (see <see cref="SdxlPromptConditioner.Encode"/>).</summary>
    public (Tensor PromptEmbeds, Tensor PooledPromptEmbeds) EncodePrompt(IReadOnlyList<string> prompts)
    {
        using var ids = TokenIds(prompts);
        return conditioner.Encode(ids.to(Device));
    }

    public int VaeScaleFactor => Vae.ScaleFactor;

    public GenerationResult Generate(GenerationRequest request, SizeConditioning? size = null)
    {
        var (seeds, negatives) = TextToImage.Check(request, VaeScaleFactor);
        bool guided = TextToImage.Guided(request);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (context, pooled) = EncodePrompt(request.Prompts);
        var timeIds = tensor((size ?? new SizeConditioning()).TimeIds(request.Height, request.Width), dtype: DType, device: Device)
            .unsqueeze(0).expand(seeds.Count, -1);
        if (guided)
        {
            var (negContext, negPooled) = EncodeNegativePrompt(negatives);
            context = cat([negContext, context]);
            pooled = cat([negPooled, pooled]);
            timeIds = cat([timeIds, timeIds]);
        }
        var eta = TextToImage.SetEta(Scheduler, request.Eta);
        var latents = TextToImage.Denoise(Unet, Scheduler, request, seeds, VaeScaleFactor, context,
            new UNetAddedConditions(pooled, timeIds), Device, DType);
        var images = DecodeLatents(latents);
        // non-default size conditioning is not among the recorded parameters
        var parameters = TextToImage.Parameters(request, seeds, negatives, Scheduler, loras.References, eta);
        return new GenerationResult(images.MoveToOuterDisposeScope(), parameters);
    }

    /// <summary>The unconditional embeddings; with <see cref="ForceZerosForEmptyPrompt"/>, zeros for an empty negative prompt.
    /// (diffusers zeros only an absent negative prompt; here "" and absent are one, as the images' parameters record them.)</summary>
    (Tensor PromptEmbeds, Tensor PooledPromptEmbeds) EncodeNegativePrompt(IReadOnlyList<string> negatives)
    {
        var (embeds, pooled) = EncodePrompt(negatives);
        if (!ForceZerosForEmptyPrompt) return (embeds, pooled);
        var keep = tensor(negatives.Select(p => p.Length > 0 ? 1f : 0f).ToArray(), dtype: embeds.dtype, device: Device);
        return (embeds * keep.view(-1, 1, 1), pooled * keep.view(-1, 1));
    }

    /// <summary>Latents → images in [0, 1].</summary>
    public Tensor DecodeLatents(Tensor latents) => TextToImage.Decode(Vae, latents, DType);

    public void Dispose()
    {
        UnloadLoras();
        conditioner.EmptyPromptIds.Dispose();
        Unet.Dispose(); (Vae as IDisposable)?.Dispose(); TextEncoder.Dispose(); TextEncoder2.Dispose();
    }
}
