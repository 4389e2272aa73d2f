using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Clip;

/// <summary>The CLIP vision tower: patch embeddings → pre_layrnorm (sic, transformers' name) → the shared encoder
/// without a causal mask; pooled = post_layernorm of the class token.</summary>
public sealed class CLIPVisionTransformer : nn.Module<Tensor, CLIPVisionModelOutput>
{
    readonly CLIPVisionEmbeddings embeddings;
    readonly LayerNorm pre_layrnorm;
    readonly CLIPEncoder encoder;
    readonly LayerNorm post_layernorm;

    public CLIPVisionTransformer(CLIPVisionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPVisionTransformer))

    {
        config.Validate(nameof(CLIPVisionConfig));
        embeddings = new CLIPVisionEmbeddings(config, device, dtype);
        pre_layrnorm = CLIPEncoder.LayerNorm(config, device, dtype);
        encoder = new CLIPEncoder(config, causal: false, device, dtype);
        post_layernorm = CLIPEncoder.LayerNorm(config, device, dtype);
        RegisterComponents();
    }

    /// <param name="pixel_values">[batch, channels, image_size, image_size] from <see cref="CLIPImageProcessor"/>.</param>
    public override CLIPVisionModelOutput forward(Tensor pixel_values)
    {
        using var scope = NewDisposeScope();
        var hidden = encoder.call(pre_layrnorm.call(embeddings.call(pixel_values)));
        var last = hidden[^1];
        var pooled = post_layernorm.call(last[.., 0]);
        scope.MoveToOuter(hidden.Append(pooled));
        return new CLIPVisionModelOutput(last, pooled, hidden);
    }
}
