using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Clip;

/// <summary>transformers' <c>CLIPVisionModel</c>: the CLIP image tower without a projection.</summary>
public sealed class CLIPVisionModel : nn.Module<Tensor, CLIPVisionModelOutput>
{
    readonly CLIPVisionTransformer vision_model;

    public CLIPVisionConfig Config { get; }

    public CLIPVisionModel(CLIPVisionConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(CLIPVisionModel))
    {
        Config = config;
        vision_model = new CLIPVisionTransformer(config, device, dtype);
        RegisterComponents();
    }

    /// <param name="pixel_values">[batch, channels, image_size, image_size] from <see cref="CLIPImageProcessor"/>.</param>
    public override CLIPVisionModelOutput forward(Tensor pixel_values) => vision_model.call(pixel_values);

    /// <summary>Loads a vision model folder, or the vision tower of a full CLIPModel folder, in eval mode.</summary>
    public static CLIPVisionModel FromPretrained(string dir, Device? device = null, ScalarType? dtype = null)
    {
        var model = new CLIPVisionModel(ReadConfig(dir), device, dtype);
        return LoadInto(model, dir);
    }

    public void SavePretrained(string dir) => CLIPPretrained.Save(this, Config with { Architectures = [nameof(CLIPVisionModel)] }, dir);

    internal static CLIPVisionConfig ReadConfig(string dir) =>
        CLIPPretrained.ReadConfig<CLIPVisionConfig>(dir, CLIPTower.Vision).Validate(Path.Combine(dir, CLIPPretrained.ConfigName));

    internal static TModel LoadInto<TModel>(TModel model, string dir) where TModel : nn.Module
    {
        try
        {
            CLIPPretrained.Load(model, dir, CLIPTower.Vision);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.eval();
        return model;
    }
}
