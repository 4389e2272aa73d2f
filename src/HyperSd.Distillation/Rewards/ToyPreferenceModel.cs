using System.Text.Json.Serialization;
using HyperSd.Diffusion.Models;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Toy;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Rewards;

public sealed record ToyPreferenceModelConfig
{
    [JsonPropertyName("_class_name")] public string ClassName { get; init; } = nameof(ToyPreferenceModel);
    /// <summary>The frozen image tower: a trained <see cref="ToyRecognizer"/>'s penultimate features (its heads are unused).</summary>
    public ToyRecognizerConfig ImageEncoder { get; init; } = new();
    /// <summary>Prompts are cut at this many tokens, bos and eos included (ImageReward: 35).</summary>
    public int MaxPromptTokens { get; init; } = 35;
    /// <summary>Width of the joint image–text embedding the MLP head reads.</summary>
    public int EmbedDim { get; init; } = 128;
    /// <summary>Raw scores are reported as (r − mean) / std, as ImageReward normalises its reward (set after training).</summary>
    public double ScoreMean { get; init; }
    public double ScoreStd { get; init; } = 1;
}

/// <summary>
/// An ImageReward-style preference model of the toy world. A frozen <see cref="ToyRecognizer"/> reads the image (ImageReward
/// starts from a pretrained BLIP; a fresh CNN trained on pairs alone stayed at chance for 150 steps and reached 0.53–0.71
/// held-out accuracy at 300); the toy text tower (<see cref="ToyVocabulary"/>'s tokenizer and a tiny CLIP text encoder, as the
/// teacher's, trained from scratch) reads the prompt, mean-pooled over its tokens; the product of their projections (where image
/// and prompt agree) goes through the LAION/ImageReward MLP head to one score. Trained on known-answer pairs
/// (<see cref="ToyPreferenceTrainer"/>); differentiable with respect to the images. Its weak spot is binding: one wrong
/// attribute of one of two objects is ranked right 0.65–0.76 of the time on held-out captions at 300 steps (one object: ≥ 0.88).
/// </summary>
public sealed class ToyPreferenceModel : nn.Module<Tensor, Tensor, Tensor>, IPairwiseReward
{
    readonly ToyRecognizer image_encoder;
    readonly CLIPTextModel text_encoder;
    readonly Linear image_projection;
    readonly Linear text_projection;
    readonly LaionAestheticMLP mlp;
    readonly CLIPTokenizer tokenizer;

    public ToyPreferenceModelConfig Config { get; private set; }

    /// <param name="imageEncoder">A trained recognizer of the configured shape to copy into the image tower, or null when the
    /// weights come from a later load.</param>
    public ToyPreferenceModel(ToyPreferenceModelConfig config, ToyRecognizer? imageEncoder = null, Device? device = null)
        : base(nameof(ToyPreferenceModel))
    {
        if (config.EmbedDim <= 0 || config.MaxPromptTokens < 3 || !(config.ScoreStd > 0))
            throw new ArgumentException($"embed_dim {config.EmbedDim} and score_std {config.ScoreStd} must be positive and " +
                                        $"max_prompt_tokens {config.MaxPromptTokens} at least 3");
        Config = config;
        tokenizer = ToyVocabulary.CreateTokenizer(config.MaxPromptTokens);
        var textConfig = ToyVocabulary.TextConfig(tokenizer);
        image_encoder = new ToyRecognizer(config.ImageEncoder, device);
        text_encoder = new CLIPTextModel(textConfig, device);
        image_projection = nn.Linear(config.ImageEncoder.FeatureDim, config.EmbedDim, device: device);
        text_projection = nn.Linear(textConfig.HiddenSize, config.EmbedDim, device: device);
        mlp = new LaionAestheticMLP(config.EmbedDim, device);
        RegisterComponents();
        FrozenImageTower.Init(image_encoder, imageEncoder);
    }

    public string Name => "toy-preference";

    /// <summary>Everything but the frozen image tower.</summary>
    public IEnumerable<Parameter> TrainableParameters() => parameters().Where(p => p.requires_grad);

    /// <summary>Raw scores [N] of token ids [N, max_prompt_tokens] and images [N, 3, 32, 32] in [0, 1].</summary>
    public override Tensor forward(Tensor inputIds, Tensor images)
    {
        using var scope = NewDisposeScope();
        var image = image_projection.call(image_encoder.Embeddings(images));
        var ids = inputIds.to(image.device);
        // mean over the tokens up to the first eos (pad is eos here): each token carries its own part of the prompt, where the
        // eos state alone (CLIP's pooling) left held-out accuracy near 0.80
        var eos = ids.eq(tokenizer.EosTokenId).to(ScalarType.Int64).argmax(-1, keepdim: true);
        var valid = arange(ids.shape[1], device: image.device).unsqueeze(0).le(eos).unsqueeze(-1).to(image.dtype);
        var tokens = text_encoder.call(ids).LastHiddenState;
        var text = text_projection.call((tokens * valid).sum(1) / valid.sum(1));
        return mlp.call(image * text).squeeze(-1).MoveToOuterDisposeScope();
    }

    /// <summary>Raw scores [N] of prompts and their images, before the normalisation.</summary>
    public Tensor RawReward(IReadOnlyList<string> prompts, Tensor images)
    {
        if (prompts.Count != images.shape[0])
            throw new ArgumentException($"expected one prompt per image, got {prompts.Count} prompts for {images.shape[0]} images");
        using var ids = tokenizer.Encode(prompts);
        return forward(ids, images);
    }

    public Tensor Reward(IReadOnlyList<string> prompts, Tensor images)
    {
        using var raw = RawReward(prompts, images);
        return (raw - Config.ScoreMean) / Config.ScoreStd;
    }

    public Tensor Score(IReadOnlyList<string> prompts, Tensor images)
    {
        using var _ = no_grad();
        return Reward(prompts, images);
    }

    /// <summary>Sets the reward's normalisation: (raw − mean) / std.</summary>
    public void SetScoreNormalization(double mean, double std) => Config = std > 0
        ? Config with { ScoreMean = mean, ScoreStd = std }
        : throw new ArgumentException($"score std {std} must be positive");

    public static ToyPreferenceModel FromPretrained(string dir, Device? device = null) =>
        PretrainedModel.Load<ToyPreferenceModelConfig, ToyPreferenceModel>(dir, config => new ToyPreferenceModel(config, device: device));

    /// <summary>Writes <c>config.json</c> and the weights (image tower included) as safetensors into <paramref name="dir"/>.</summary>
    public void SavePretrained(string dir) => PretrainedModel.Save(this, Config, dir);
}
