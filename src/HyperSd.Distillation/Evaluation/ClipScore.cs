using static TorchSharp.torch;

namespace HyperSd.Distillation.Evaluation;

/// <summary>
/// CLIP score (Hessel et al. 2021, as torchmetrics' <c>CLIPScore</c> computes it): 100 · cos(text_embeds, image_embeds)
/// of each prompt and its image, floored at 0. torchmetrics uses openai/clip-vit-large-patch14 by default
/// (<see cref="ClipEmbedder.FromPretrained"/> on that folder). torchmetrics floors the mean over images; here each
/// image's score is floored, which gives the same mean whenever no pair has a negative cosine (the usual case); the
/// unfloored values are <see cref="Similarity"/>.
/// </summary>
public sealed class ClipScore : IImageScorer, IDisposable
{
    readonly ClipEmbedder clip;

    public ClipScore(ClipEmbedder clip)
    {
        if (clip.TextEncoder is null)
            throw new ArgumentException("CLIP score needs the CLIP text tower: build the embedder with its text encoder");

        this.clip = clip;
    }

    public static ClipScore FromPretrained(string dir, Device? device = null) => new(ClipEmbedder.FromPretrained(dir, device: device));

    public string Name => "clip-score";

    /// <summary>[N] 100 · cosine, not floored.</summary>
    public Tensor Similarity(IReadOnlyList<string> prompts, Tensor images)
    {
        using var cosine = clip.Cosine(prompts, images);
        return cosine * 100;
    }

    /// <summary>[N] max(100 · cosine, 0).</summary>
    public Tensor Score(IReadOnlyList<string> prompts, Tensor images)
    {
        using var similarity = Similarity(prompts, images);
        return similarity.clamp_min(0);
    }

    public void Dispose() => clip.Dispose();
}
