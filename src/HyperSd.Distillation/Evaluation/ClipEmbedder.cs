using HyperSd.Diffusion.Clip;
using HyperSd.Diffusion.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Evaluation;

/// <summary>
/// A CLIP model's two towers as the real-scale metrics read them (transformers' <c>CLIPModel.get_text_features</c> and
/// <c>get_image_features</c>): projected text embeddings of prompts (CLIPTokenizer → CLIPTextModelWithProjection) and
/// projected image embeddings of images in [0, 1] (CLIPImageProcessor → CLIPVisionModelWithProjection). Both towers must
/// come from one CLIP model so that their embeddings share a space. Owns the models it is given. Runs in whatever grad
/// mode the caller is in (the evaluator measures under no_grad; a reward can differentiate through a float processor).
/// </summary>
public sealed class ClipEmbedder : IDisposable
{
    public CLIPVisionModelWithProjection ImageEncoder { get; }
    public CLIPImageProcessor Processor { get; }
    public CLIPTextModelWithProjection? TextEncoder { get; }
    public CLIPTokenizer? Tokenizer { get; }
    /// <summary>Images (and prompts) per forward pass.</summary>
    public int BatchSize { get; init; } = 32;

    public ClipEmbedder(CLIPVisionModelWithProjection imageEncoder, CLIPImageProcessor processor,
        CLIPTextModelWithProjection? textEncoder = null, CLIPTokenizer? tokenizer = null)
    {
        if ((textEncoder is null) != (tokenizer is null))
            throw new ArgumentException("a CLIP text encoder needs its tokenizer (and a tokenizer its text encoder)");
        if (textEncoder is not null)
        {
            CLIPTextConfig t = textEncoder.Config;
            CLIPVisionConfig v = imageEncoder.Config;
            if (t.ProjectionDim != v.ProjectionDim)
                throw new ArgumentException(
                    $"the CLIP towers project to different widths: text_projection.weight [{t.ProjectionDim}, {t.HiddenSize}] " +
                    $"vs visual_projection.weight [{v.ProjectionDim}, {v.HiddenSize}]; both must come from the same CLIP model");
        }
        ImageEncoder = imageEncoder;
        Processor = processor;
        TextEncoder = textEncoder;
        Tokenizer = tokenizer;
    }

    /// <summary>Loads a full CLIPModel folder as the Hub lays it out (openai/clip-vit-large-patch14): config.json and
    /// model.safetensors, the tokenizer files (vocab.json, merges.txt, tokenizer_config.json) and preprocessor_config.json.
    /// <paramref name="processorDir"/> holds the tokenizer and preprocessor files when the model folder lacks them
    /// (PickScore_v1 uses laion/CLIP-ViT-H-14-laion2B-s32B-b79K's).</summary>
    public static ClipEmbedder FromPretrained(string dir, string? processorDir = null, bool withText = true,
        Device? device = null, ScalarType? dtype = null)
    {
        processorDir ??= dir;
        var processor = CLIPImageProcessor.FromPretrained(processorDir);
        var tokenizer = withText ? CLIPTokenizer.FromPretrained(processorDir) : null;
        var image = CLIPVisionModelWithProjection.FromPretrained(dir, device, dtype);
        CLIPTextModelWithProjection? text = null;
        try
        {
            text = withText ? CLIPTextModelWithProjection.FromPretrained(dir, device, dtype) : null;
            return new ClipEmbedder(image, processor, text, tokenizer);
        }
        catch
        {
            image.Dispose();
            text?.Dispose();
            throw;
        }
    }

    /// <summary>[N, projection_dim] image_embeds of images [N, 3, H, W] in [0, 1]; with <paramref name="pooled"/>, the
    /// unprojected [N, hidden] pooler_output instead.</summary>
    public Tensor ImageEmbeds(Tensor images, bool pooled = false)
    {
        var device = ImageEncoder.parameters().First().device;
        return Batched(images.shape[0], (start, end) =>
        {
            using var pixels = Processor.Preprocess(images[TensorIndex.Slice(start, end)].to(device));
            using var output = ImageEncoder.call(pixels);
            return (pooled ? output.PoolerOutput : output.ImageEmbeds!).alias();
        });
    }

    /// <summary>[N, projection_dim] text_embeds of prompts (padded to the tokenizer's length, truncated with eos kept).</summary>
    public Tensor TextEmbeds(IReadOnlyList<string> prompts)
    {
        if (TextEncoder is null || Tokenizer is null)
            throw new InvalidOperationException("this CLIP embedder was built without the text tower");

        var device = TextEncoder.parameters().First().device;
        return Batched(prompts.Count, (start, end) =>
        {
            using var ids = Tokenizer.Encode(prompts.Skip((int)start).Take((int)(end - start)).ToList()).to(device);
            using var output = TextEncoder.call(ids);
            return output.TextEmbeds!.alias();
        });
    }

    /// <summary>[N] cosine similarity of each prompt's and its image's projected embeddings.</summary>
    public Tensor Cosine(IReadOnlyList<string> prompts, Tensor images)
    {
        if (prompts.Count != images.shape[0])
            throw new ArgumentException($"{prompts.Count} prompts for {images.shape[0]} images: a prompt per image is needed");
        using var scope = NewDisposeScope();
        var text = Normalize(TextEmbeds(prompts));
        var image = Normalize(ImageEmbeds(images)).to(text.device);
        return (text * image).sum(-1).MoveToOuterDisposeScope();
    }

    /// <summary>x / ‖x‖ over the last axis, a zero vector left as is (as the LAION predictor's <c>normalized</c> does).</summary>
    public static Tensor Normalize(Tensor x)
    {
        using var norm = x.norm(-1, keepdim: true);
        using var safe = norm.masked_fill(norm.eq(0), 1);
        return x / safe;
    }

    Tensor Batched(long count, Func<long, long, Tensor> run)
    {
        if (count == 0) throw new ArgumentException("nothing to embed: no images or prompts given");
        var parts = new List<Tensor>();
        try
        {
            for (long start = 0; start < count; start += BatchSize) parts.Add(run(start, Math.Min(count, start + BatchSize)));
            return parts.Count == 1 ? parts[0].alias() : cat(parts, 0);
        }
        finally
        {
            foreach (var p in parts) p.Dispose();
        }
    }

    public void Dispose()
    {
        ImageEncoder.Dispose();
        TextEncoder?.Dispose();
    }
}
