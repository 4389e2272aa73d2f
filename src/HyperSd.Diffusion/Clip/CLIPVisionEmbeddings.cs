using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Clip;

/// <summary>ViT patch embeddings: a stride-patch convolution cuts the image into patch vectors, a learned class token is
/// put in front, and learned absolute position embeddings are added.</summary>
public sealed class CLIPVisionEmbeddings : nn.Module<Tensor, Tensor>
{
    readonly Parameter class_embedding;
    readonly Conv2d patch_embedding;
    readonly Embedding position_embedding;
    readonly int imageSize;

    public CLIPVisionEmbeddings(CLIPVisionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPVisionEmbeddings))

    {
        imageSize = config.ImageSize;
        class_embedding = nn.Parameter(randn(config.HiddenSize, dtype: dtype, device: device));
        patch_embedding = nn.Conv2d(config.NumChannels, config.HiddenSize, config.PatchSize, stride: config.PatchSize, bias: false,
            device: device, dtype: dtype);
        int positions = config.PatchesPerSide * config.PatchesPerSide + 1;
        position_embedding = nn.Embedding(positions, config.HiddenSize, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="pixel_values">[batch, channels, image_size, image_size], normalised as CLIPImageProcessor does.</param>
    /// <returns>[batch, 1 + patches, hidden]: the class token first, then the patches row by row.</returns>
    public override Tensor forward(Tensor pixel_values)
    {
        long height = pixel_values.shape[^2], width = pixel_values.shape[^1];
        if (pixel_values.dim() != 4 || height != imageSize || width != imageSize)
            throw new ArgumentException($"pixel_values has shape [{string.Join(", ", pixel_values.shape)}]; the vision model takes " +
                                        $"[batch, channels, {imageSize}, {imageSize}] (image_size {imageSize})");
        using var scope = NewDisposeScope();
        long batch = pixel_values.shape[0];
        var patches = patch_embedding.call(pixel_values.to(patch_embedding.weight!.dtype)).flatten(2).transpose(1, 2);
        var classToken = class_embedding.expand(batch, 1, -1);
        return (cat([classToken, patches], 1) + position_embedding.weight!).MoveToOuterDisposeScope();
    }
}
