using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Clip;

/// <summary>transformers' <c>CLIPVisionModelWithProjection</c>: the image tower plus <c>visual_projection</c>, whose output
/// (image_embeds) lives in the space shared with the text tower's text_embeds (CLIP score, aesthetic and preference
/// predictors, IP-Adapter image encoders).</summary>
public sealed class CLIPVisionModelWithProjection : nn.Module<Tensor, CLIPVisionModelOutput>
{
    readonly CLIPVisionTransformer vision_model;
    readonly Linear visual_projection;

    public CLIPVisionConfig Config { get; }

    public CLIPVisionModelWithProjection(CLIPVisionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPVisionModelWithProjection))
    {
        Config = config;
        vision_model = new CLIPVisionTransformer(config, device, dtype);
        visual_projection = nn.Linear(config.HiddenSize, config.ProjectionDim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="pixel_values">[batch, channels, image_size, image_size] from <see cref="CLIPImageProcessor"/>.</param>
    public override CLIPVisionModelOutput forward(Tensor pixel_values)
    {
        var output = vision_model.call(pixel_values);
        return output with { ImageEmbeds = visual_projection.call(output.PoolerOutput) };
    }

    /// <summary>Loads a vision model folder (e.g. an image_encoder/), or the vision tower and visual_projection of a full
    /// CLIPModel folder, in eval mode.</summary>
    public static CLIPVisionModelWithProjection FromPretrained(string dir, Device? device = null, ScalarType? dtype = null) =>
        CLIPVisionModel.LoadInto(new CLIPVisionModelWithProjection(CLIPVisionModel.ReadConfig(dir), device, dtype), dir);

    public void SavePretrained(string dir) =>
        CLIPPretrained.Save(this, Config with { Architectures = [nameof(CLIPVisionModelWithProjection)] }, dir);
}
