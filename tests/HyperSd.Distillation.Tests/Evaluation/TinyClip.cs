using System.Text.Json.Nodes;
using HyperSd.Diffusion.Clip;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Evaluation;

/// <summary>A tiny random-weight CLIP: a byte-level tokenizer (every byte a token, no merges), a 1-layer text tower and a
/// 2-layer vision tower on 8×8 images, both projecting to <c>projection</c> wide embeddings.</summary>
static class TinyClip
{
    public static readonly CLIPImageProcessor Processor = new() { ShortestEdge = 8, CropSize = (8, 8) };

    public static CLIPTokenizer Tokenizer()
    {
        var bytes = CLIPTokenizer.BytesToUnicode();
        var vocab = bytes.Concat(bytes.Select(b => b + "</w>")).Select((token, id) => (token, id)).ToDictionary(p => p.token, p => p.id);
        vocab["<|startoftext|>"] = vocab.Count;
        vocab["<|endoftext|>"] = vocab.Count;
        return new CLIPTokenizer(vocab, [], modelMaxLength: 16);
    }

    public static CLIPTextConfig TextConfig(int projection) => new()
    {
        VocabSize = 514, HiddenSize = 8, IntermediateSize = 16, ProjectionDim = projection, NumHiddenLayers = 1, NumAttentionHeads = 2,
        MaxPositionEmbeddings = 16, BosTokenId = 512, EosTokenId = 513,
    };

    public static CLIPVisionConfig VisionConfig(int projection) => new()
    {
        HiddenSize = 16, IntermediateSize = 24, ProjectionDim = projection, NumHiddenLayers = 2, NumAttentionHeads = 2,
        ImageSize = 8, PatchSize = 4,
    };

    public static void Randomize(nn.Module model, long seed)
    {
        var generator = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var (_, p) in model.named_parameters()) p.normal_(0, 0.4, generator);
        model.eval();
    }

    public static ClipEmbedder Embedder(int textProjection = 12, int visionProjection = 12)
    {
        var text = new CLIPTextModelWithProjection(TextConfig(textProjection));
        var vision = new CLIPVisionModelWithProjection(VisionConfig(visionProjection));
        Randomize(text, 1);
        Randomize(vision, 2);
        try
        {
            return new ClipEmbedder(vision, Processor, text, Tokenizer());
        }
        catch
        {
            text.Dispose();
            vision.Dispose();
            throw;
        }
    }

    /// <summary>Writes <paramref name="clip"/> as a full CLIPModel folder as the Hub lays one out: a nested config, both
    /// towers' weights (and logit_scale when given), the tokenizer files and preprocessor_config.json.</summary>
    public static void SaveFullModel(ClipEmbedder clip, string dir, double? logitScale)
    {
        Directory.CreateDirectory(dir);
        JsonNode Node<T>(T config) => System.Text.Json.JsonSerializer.SerializeToNode(config, ModelConfig.Json)!;
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("CLIPModel"), ["model_type"] = "clip",
            ["projection_dim"] = clip.ImageEncoder.Config.ProjectionDim,
            ["text_config"] = Node(clip.TextEncoder!.Config), ["vision_config"] = Node(clip.ImageEncoder.Config),
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var tensors = StateDict.Of(clip.TextEncoder).Concat(StateDict.Of(clip.ImageEncoder)).ToDictionary();
        if (logitScale is double scale) tensors["logit_scale"] = tensor((float)scale);
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), tensors);
        clip.Tokenizer!.SavePretrained(dir);
        File.WriteAllText(Path.Combine(dir, CLIPImageProcessor.ConfigName),
            """
            {"crop_size": {"height": 8, "width": 8}, "size": {"shortest_edge": 8}, "resample": 3,
             "do_rescale": true, "rescale_factor": 0.00392156862745098}
            """);

    }

    /// <summary>The cosine of each prompt's and image's projected embeddings, computed from the models directly.</summary>
    public static Tensor Cosine(ClipEmbedder clip, IReadOnlyList<string> prompts, Tensor images)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var text = clip.TextEncoder!.forward(clip.Tokenizer!.Encode(prompts)).TextEmbeds!;
        var image = clip.ImageEncoder.forward(clip.Processor.Preprocess(images)).ImageEmbeds!;
        var cosine = (text * image).sum(-1) / (text.norm(-1) * image.norm(-1));
        return cosine.MoveToOuterDisposeScope();
    }
}
