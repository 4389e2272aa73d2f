using static TorchSharp.torch;

namespace HyperSd.Distillation.Evaluation;

/// <summary>
/// CLIP image embeddings as the evaluator's features: a Fréchet distance on them is reported as "fd-clip" (not
/// Inception FID, whose numbers it cannot be compared with). By default the projected image_embeds (what
/// <c>get_image_features</c> / OpenAI's <c>encode_image</c> give), unnormalised; <c>projected: false</c> takes the
/// pooled, post-layernorm class token before the projection.
/// </summary>
public sealed class ClipImageFeatures(ClipEmbedder clip, bool projected = true) : IImageFeatures, IDisposable
{
    public string MetricName => "fd-clip";

    public bool Projected => projected;

    /// <summary>[N, projection_dim] (or [N, hidden] pooled) float32 features of images in [0, 1].</summary>
    public Tensor Features(Tensor images)
    {
        using var _ = no_grad();
        var features = clip.ImageEmbeds(images, pooled: !projected);
        var result = features.to(ScalarType.Float32, CPU);
        if (!ReferenceEquals(result, features)) features.Dispose(); // .to may return the tensor itself
        return result;
    }

    public void Dispose() => clip.Dispose();
}
