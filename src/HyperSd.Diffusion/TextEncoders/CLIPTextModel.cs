using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.TextEncoders;

/// <summary>transformers' <c>CLIPTextModel</c>: the SD1.x text encoder (and SDXL's first one).</summary>
public sealed class CLIPTextModel : nn.Module<Tensor, CLIPTextModelOutput>
{
    readonly CLIPTextTransformer text_model;

    public CLIPTextConfig Config { get; }

    public CLIPTextModel(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(CLIPTextModel))
    {
        Config = config;
        text_model = new CLIPTextTransformer(config, device, dtype);
        RegisterComponents();
    }

    /// <param name="input_ids">[batch, tokens] int64 token ids (tokens ≤ max_position_embeddings).</param>
    public override CLIPTextModelOutput forward(Tensor input_ids) => text_model.call(input_ids);

    /// <summary>Loads a text_encoder folder (config.json + model.safetensors) in eval mode.</summary>
    public static CLIPTextModel FromPretrained(string dir, Device? device = null, ScalarType? dtype = null)
    {
        var model = new CLIPTextModel(CLIPTextWeights.ReadConfig(dir), device, dtype);
        CLIPTextWeights.Load(model, dir);
        model.eval();
        return model;
    }

    public void SavePretrained(string dir) =>
        CLIPTextWeights.Save(this, Config with { Architectures = [nameof(CLIPTextModel)] }, dir);
}
