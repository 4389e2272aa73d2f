using HyperSd.Diffusion.Clip;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Evaluation;

/// <summary>
/// A PickScore-style preference score: a CLIP model fine-tuned on human preferences scores a prompt and an image by
/// logit_scale.exp() · cos(text_embeds, image_embeds), its own CLIP logit (PickScore's README: <c>model.logit_scale.exp()
/// * text_embs @ image_embs.T</c> with both embeddings L2-normalised). Loads a full CLIPModel folder in the transformers
/// layout (yuvalkirstain/PickScore_v1, with laion/CLIP-ViT-H-14-laion2B-s32B-b79K's tokenizer and preprocessor); HPSv2's
/// open_clip checkpoints must be converted to that layout first. It should not be the reward a model was trained on.
/// </summary>
public sealed class PreferenceScore : Rewards.IImageReward, IDisposable
{
    readonly ClipEmbedder clip;

    /// <param name="logitScale">The model's <c>logit_scale</c> (a log; the score multiplies the cosine by its exp).</param>
    public PreferenceScore(ClipEmbedder clip, double logitScale, string name = "pickscore")
    {
        if (clip.TextEncoder is null)
            throw new ArgumentException("a preference score needs the CLIP text tower: build the embedder with its text encoder");

        if (!double.IsFinite(logitScale)) throw new ArgumentException($"logit_scale must be finite, got {logitScale}");
        this.clip = clip;
        LogitScale = logitScale;
        Name = name;
    }

    /// <summary>Loads the model and its logit_scale from a full CLIPModel folder; <paramref name="processorDir"/> holds the
    /// tokenizer and preprocessor_config.json when the model folder lacks them.</summary>
    public static PreferenceScore FromPretrained(string dir, string? processorDir = null, string name = "pickscore", Device? device = null)
    {
        double logitScale = CLIPPretrained.ReadLogitScale(dir);
        return new PreferenceScore(ClipEmbedder.FromPretrained(dir, processorDir, device: device), logitScale, name);
    }

    public string Name { get; }
    public double LogitScale { get; }

    /// <summary>[N] exp(logit_scale) · cosine of each prompt and its image, without gradients.</summary>
    public Tensor Score(IReadOnlyList<string> prompts, Tensor images)
    {
        using var _ = no_grad();
        return Reward(prompts, images);
    }

    /// <summary>The score, differentiable with respect to the images (ReFL's preference reward).</summary>
    public Tensor Reward(IReadOnlyList<string> prompts, Tensor images)
    {
        using var cosine = clip.Cosine(prompts, images);
        return cosine * Math.Exp(LogitScale);
    }

    public void Dispose() => clip.Dispose();
}
