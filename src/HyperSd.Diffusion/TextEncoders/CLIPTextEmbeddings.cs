using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.TextEncoders;

/// <summary>Token plus learned absolute position embeddings.</summary>
public sealed class CLIPTextEmbeddings : nn.Module<Tensor, Tensor>
{
    readonly Embedding token_embedding;
    readonly Embedding position_embedding;

    public CLIPTextEmbeddings(CLIPTextConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(CLIPTextEmbeddings))
    {
        token_embedding = nn.Embedding(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        position_embedding = nn.Embedding(config.MaxPositionEmbeddings, config.HiddenSize, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input_ids)
    {
        long length = input_ids.shape[^1], max = position_embedding.weight!.shape[0];
        if (length > max)
            throw new ArgumentException($"input_ids has {length} tokens, the text encoder has {max} positions (max_position_embeddings)");
        using var positions = arange(length, dtype: ScalarType.Int64, device: input_ids.device);
        using var tokens = token_embedding.call(input_ids);
        using var position = position_embedding.call(positions);
        return tokens + position;
    }
}
