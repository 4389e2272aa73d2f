using HyperSd.Diffusion.IO;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Evaluation;

/// <summary>
/// The LAION aesthetic score: <see cref="LaionAestheticMLP"/> on the L2-normalised projected image embedding of CLIP
/// ViT-L/14 (OpenAI's <c>encode_image</c>, which is transformers' image_embeds). The prompt is not used. The original
/// runs OpenAI CLIP's preprocessing (torchvision Resize(224, bicubic) and CenterCrop on PIL images), which computes
/// the same as CLIPImageProcessor with openai/clip-vit-large-patch14's preprocessor_config.json.
/// </summary>
public sealed class LaionAestheticPredictor : Rewards.IImageReward, IDisposable
{
    readonly ClipEmbedder clip;
    readonly LaionAestheticMLP mlp;

    public LaionAestheticPredictor(ClipEmbedder clip, LaionAestheticMLP mlp)
    {
        CheckWidth([1024, mlp.InputSize], clip, "the aesthetic predictor", "the CLIP image tower");
        this.clip = clip;
        this.mlp = mlp;
    }

    /// <summary>CLIP ViT-L/14 from a full CLIPModel (or CLIPVisionModelWithProjection) folder with its
    /// preprocessor_config.json, and the predictor from a safetensors file.</summary>
    public static LaionAestheticPredictor FromPretrained(string clipDir, string predictorPath, Device? device = null)
    {
        var clip = ClipEmbedder.FromPretrained(clipDir, withText: false, device: device);
        try
        {
            // the width from the file's header first: a predictor for another CLIP is named as that, not as one misshapen key
            if (SafeTensors.ReadHeader(predictorPath).TryGetValue("layers.0.weight", out var first) && first.Shape.Length == 2)
                CheckWidth(first.Shape, clip, $"the aesthetic predictor {predictorPath}", $"the CLIP image tower of {clipDir}");
            var mlp = LaionAestheticMLP.FromPretrained(predictorPath, clip.ImageEncoder.Config.ProjectionDim, device);
            return new LaionAestheticPredictor(clip, mlp);
        }
        catch
        {
            clip.Dispose();
            throw;
        }
    }

    /// <param name="firstLinear">The shape of the predictor's layers.0.weight, [1024, width].</param>
    static void CheckWidth(long[] firstLinear, ClipEmbedder clip, string predictor, string tower)
    {
        var v = clip.ImageEncoder.Config;
        if (v.ProjectionDim != firstLinear[1])
            throw new ArgumentException(
                $"{predictor} takes {firstLinear[1]}-wide embeddings (layers.0.weight [{string.Join(", ", firstLinear)}]) but {tower} " +
                $"gives {v.ProjectionDim} (visual_projection.weight [{v.ProjectionDim}, {v.HiddenSize}]); the released predictor needs " +
                "CLIP ViT-L/14");
    }

    public string Name => "laion-aesthetic";

    /// <summary>[N] predicted ratings of images in [0, 1] without gradients; <paramref name="prompts"/> is ignored.</summary>
    public Tensor Score(IReadOnlyList<string> prompts, Tensor images)
    {
        using var _ = no_grad();
        return Reward(prompts, images);
    }

    /// <summary>The ratings, differentiable with respect to the images (the CLIP processor is float tensor work): ReFL's
    /// aesthetic reward.</summary>
    public Tensor Reward(IReadOnlyList<string> prompts, Tensor images)
    {
        using var scope = NewDisposeScope();
        var embeds = ClipEmbedder.Normalize(clip.ImageEmbeds(images));
        var weight = mlp.parameters().First();
        return mlp.call(embeds.to(weight.dtype, weight.device)).squeeze(-1).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        clip.Dispose();
        mlp.Dispose();
    }
}
