using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.TextEncoders;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Pipelines;

/// <summary>What the UNet is conditioned on for a batch: the text context (encoder hidden states) and, for SDXL, the
/// added conditions (pooled text embedding and time ids).</summary>
public sealed record PromptCondition(Tensor Context, UNetAddedConditions? Added = null)
{
    /// <summary>The UNet's output for <paramref name="sample"/> at <paramref name="timesteps"/> under this condition.</summary>
    public Tensor Predict(UNet2DConditionModel unet, Tensor sample, Tensor timesteps, UNetFeatures? features = null) =>
        unet.forward(sample, timesteps, Context, Added, features);

    /// <summary>Both batches in one, <paramref name="first"/>'s rows first (classifier-free guidance's one UNet call).</summary>
    public static PromptCondition Cat(PromptCondition first, PromptCondition second) => new(cat([first.Context, second.Context]),
        first.Added is null || second.Added is null ? null : new UNetAddedConditions(
            Join(first.Added.TextEmbeds, second.Added.TextEmbeds), Join(first.Added.TimeIds, second.Added.TimeIds)));

    static Tensor? Join(Tensor? a, Tensor? b) => a is null || b is null ? null : cat([a, b]);
}

/// <summary>
/// A pipeline's text side as the trainers use it, split at the token ids that datasets and trajectory shards store:
/// ids [N, tokens] for SD1.x, [N, 2, tokens] for SDXL (both tokenizers' ids). Conditions are computed without gradients
/// (the text encoders stay frozen).
/// </summary>
public abstract class PromptConditioner
{
    /// <summary>The empty prompt's ids, [1, …] as one row of the dataset's ids.</summary>
    public abstract Tensor EmptyPromptIds { get; }

    /// <summary>The condition of token ids (rows of the dataset's ids) for <paramref name="latents"/> (SDXL's size
    /// conditioning comes from their size).</summary>
    public abstract PromptCondition Condition(Tensor ids, Tensor latents);

    /// <summary>Guidance's unconditional branch for <paramref name="latents"/>.</summary>
    public abstract PromptCondition Unconditional(Tensor latents);
}

/// <summary>SD1.x: the CLIP text encoder's last hidden state; the empty prompt is the unconditional branch.</summary>
public sealed class CLIPPromptConditioner(CLIPTextModel textEncoder, Tensor emptyPromptIds) : PromptConditioner
{
    public override Tensor EmptyPromptIds { get; } = emptyPromptIds.dim() == 2 ? emptyPromptIds : emptyPromptIds.reshape(1, -1);

    public override PromptCondition Condition(Tensor ids, Tensor latents)
    {
        using var _ = no_grad();
        using var output = textEncoder.call(ids.to(latents.device));
        return new PromptCondition(output.LastHiddenState.alias());
    }

    public override PromptCondition Unconditional(Tensor latents) =>
        Condition(EmptyPromptIds.expand(latents.shape[0], -1), latents);
}

/// <summary>
/// SDXL: both encoders' penultimate states concatenated as the context, the second's projected pooled output and the
/// time ids as the added conditions. The time ids are the training images' size with no crop, as LCM's SDXL
/// distillation with <c>--use_fix_crop_and_size</c> and the pipeline's default at inference. The unconditional branch
/// is zeros when <paramref name="forceZerosForEmptyPrompt"/> (SDXL's config; LCM's SDXL scripts distil against zeros).
/// </summary>
public sealed class SdxlPromptConditioner(CLIPTextModel textEncoder, CLIPTextModelWithProjection textEncoder2, Tensor emptyPromptIds,
    int vaeScaleFactor, bool forceZerosForEmptyPrompt) : PromptConditioner
{
    public override Tensor EmptyPromptIds { get; } = emptyPromptIds.dim() == 3 ? emptyPromptIds : emptyPromptIds.reshape(1, 2, -1);

    public override PromptCondition Condition(Tensor ids, Tensor latents)
    {
        using var scope = NewDisposeScope();
        var (context, pooled) = Encode(ids.to(latents.device));
        return new PromptCondition(context.MoveToOuterDisposeScope(),
            new UNetAddedConditions(pooled.MoveToOuterDisposeScope(), TimeIds(latents).MoveToOuterDisposeScope()));
    }

    /// <summary>diffusers' encode_prompt on token ids [N, 2, tokens]: both encoders' penultimate hidden states (before
    /// the final norm) concatenated [N, tokens, hidden + hidden_2], and text_encoder_2's projected pooled output.</summary>
    public (Tensor PromptEmbeds, Tensor PooledPromptEmbeds) Encode(Tensor ids)
    {
        if (ids.dim() != 3 || ids.shape[1] != 2)
            throw new ArgumentException(
                $"SDXL token ids must be [batch, 2, tokens] (both tokenizers' ids), got [{string.Join(", ", ids.shape)}]");
        using var _ = no_grad();
        using var output = textEncoder.call(ids.select(1, 0));
        using var output2 = textEncoder2.call(ids.select(1, 1));
        return (cat([output.PenultimateHiddenState, output2.PenultimateHiddenState], -1), output2.TextEmbeds!.alias());
    }

    public override PromptCondition Unconditional(Tensor latents)
    {
        var n = latents.shape[0];
        var empty = Condition(EmptyPromptIds.expand(n, -1, -1), latents);
        if (!forceZerosForEmptyPrompt) return empty;
        return new PromptCondition(
            zeros_like(empty.Context), new UNetAddedConditions(zeros_like(empty.Added!.TextEmbeds!), empty.Added.TimeIds));
    }

    Tensor TimeIds(Tensor latents)
    {
        int height = checked((int)latents.shape[2] * vaeScaleFactor), width = checked((int)latents.shape[3] * vaeScaleFactor);
        return tensor(new SizeConditioning().TimeIds(height, width), dtype: latents.dtype, device: latents.device)
            .unsqueeze(0).expand(latents.shape[0], -1);
    }
}
