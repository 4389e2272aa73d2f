using HyperSd.Diffusion.Clip;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.TextEncoders;

/// <summary>The CLIP text tower: embeddings → causal encoder → final layer norm, pooled at the eos token.</summary>
public sealed class CLIPTextTransformer : nn.Module<Tensor, CLIPTextModelOutput>
{
    readonly CLIPTextEmbeddings embeddings;
    readonly CLIPEncoder encoder;
    readonly LayerNorm final_layer_norm;
    readonly int eosTokenId;

    public CLIPTextTransformer(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(CLIPTextTransformer))
    {
        config.Validate(nameof(CLIPTextConfig));
        eosTokenId = config.EosTokenId;
        embeddings = new CLIPTextEmbeddings(config, device, dtype);
        encoder = new CLIPEncoder(config, causal: true, device, dtype);
        final_layer_norm = CLIPEncoder.LayerNorm(config, device, dtype);
        RegisterComponents();
    }

    /// <param name="input_ids">[batch, tokens] int64 token ids.</param>
    public override CLIPTextModelOutput forward(Tensor input_ids)
    {
        using var scope = NewDisposeScope();
        var hidden = encoder.call(embeddings.call(input_ids));
        var last = final_layer_norm.call(hidden[^1]);
        var ids = input_ids.to(ScalarType.Int32, last.device);
        // eos_token_id 2 is the value of configs written before transformers PR #24773 (SD1.x among them): those pool at
        // the largest id, which is CLIP's eos; newer configs pool at the first eos.
        var eosIndex = eosTokenId == 2 ? ids.argmax(-1) : ids.eq(eosTokenId).to(ScalarType.Int32).argmax(-1);
        var pooled = last.index(arange(last.shape[0], ScalarType.Int64, last.device), eosIndex);
        scope.MoveToOuter(hidden.Append(last).Append(pooled));
        return new CLIPTextModelOutput(last, pooled, hidden);
    }
}
