using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.TextEncoders;

/// <summary>transformers' <c>CLIPTextModelWithProjection</c>: SDXL's second text encoder, whose projected pooled output
/// (text_embeds) conditions the UNet's added embedding.</summary>
public sealed class CLIPTextModelWithProjection : nn.Module<Tensor, CLIPTextModelOutput>
{
    readonly CLIPTextTransformer text_model;
    readonly Linear text_projection;

    public CLIPTextConfig Config { get; }

    public CLIPTextModelWithProjection(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CLIPTextModelWithProjection))
    {
        Config = config;
        text_model = new CLIPTextTransformer(config, device, dtype);
        text_projection = nn.Linear(config.HiddenSize, config.ProjectionDim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="input_ids">[batch, tokens] int64 token ids (tokens ≤ max_position_embeddings).</param>
    public override CLIPTextModelOutput forward(Tensor input_ids)
    {
        var output = text_model.call(input_ids);
        return output with { TextEmbeds = text_projection.call(output.PoolerOutput) };
    }

    /// <summary>Loads a text_encoder_2 folder (config.json + model.safetensors) in eval mode.</summary>
    public static CLIPTextModelWithProjection FromPretrained(string dir, Device? device = null, ScalarType? dtype = null)
    {
        var model = new CLIPTextModelWithProjection(CLIPTextWeights.ReadConfig(dir), device, dtype);
        CLIPTextWeights.Load(model, dir);
        model.eval();
        return model;
    }

    public void SavePretrained(string dir) =>
        CLIPTextWeights.Save(this, Config with { Architectures = [nameof(CLIPTextModelWithProjection)] }, dir);
}
