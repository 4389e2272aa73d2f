using System.Text.Json.Serialization;
using HyperSd.Diffusion.Models;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Toy;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Rewards;

public sealed record ToyAestheticModelConfig
{
    [JsonPropertyName("_class_name")] public string ClassName { get; init; } = nameof(ToyAestheticModel);
    /// <summary>The frozen image model whose L2-normalised penultimate features the MLP reads (CLIP ViT-L/14's place).</summary>
    public ToyRecognizerConfig ImageEncoder { get; init; } = new();
    /// <summary>Raw scores are reported as (r − mean) / std (set after training).</summary>
    public double ScoreMean { get; init; }
    public double ScoreStd { get; init; } = 1;
}

/// <summary>
/// The LAION aesthetic predictor in the toy world: <see cref="LaionAestheticMLP"/> (768 → … → 1, here feature_dim → … → 1) on
/// the L2-normalised features of a frozen <see cref="ToyRecognizer"/>, trained to prefer the cleaner render of a scene (less
/// noise, sharper edges; <see cref="ToyAestheticTrainer"/>). The prompt is not used. Differentiable with respect to the images.
/// </summary>
public sealed class ToyAestheticModel : nn.Module<Tensor, Tensor>, IPairwiseReward
{
    readonly ToyRecognizer image_encoder;
    readonly LaionAestheticMLP mlp;

    public ToyAestheticModelConfig Config { get; private set; }

    /// <param name="imageEncoder">A trained recognizer of the configured shape to copy into the image encoder, or null when the
    /// weights come from a later load.</param>
    public ToyAestheticModel(ToyAestheticModelConfig config, ToyRecognizer? imageEncoder = null, Device? device = null)
        : base(nameof(ToyAestheticModel))
    {
        if (!(config.ScoreStd > 0)) throw new ArgumentException($"score_std {config.ScoreStd} must be positive");
        Config = config;
        image_encoder = new ToyRecognizer(config.ImageEncoder, device);
        mlp = new LaionAestheticMLP(config.ImageEncoder.FeatureDim, device);
        RegisterComponents();
        FrozenImageTower.Init(image_encoder, imageEncoder);
    }

    public string Name => "toy-aesthetic";

    /// <summary>The MLP head (the image encoder stays frozen, as CLIP does under the LAION predictor).</summary>
    public IEnumerable<Parameter> TrainableParameters() => parameters().Where(p => p.requires_grad);

    /// <summary>Raw scores [N] of images [N, 3, 32, 32] in [0, 1].</summary>
    public override Tensor forward(Tensor images)
    {
        using var scope = NewDisposeScope();
        return mlp.call(ClipEmbedder.Normalize(image_encoder.Embeddings(images))).squeeze(-1).MoveToOuterDisposeScope();
    }

    /// <summary>Raw scores [N]; <paramref name="prompts"/> is ignored.</summary>
    public Tensor RawReward(IReadOnlyList<string> prompts, Tensor images) => forward(images);

    public Tensor Reward(IReadOnlyList<string> prompts, Tensor images)
    {
        using var raw = forward(images);
        return (raw - Config.ScoreMean) / Config.ScoreStd;
    }

    /// <summary>[N] normalised scores without gradients; <paramref name="prompts"/> is ignored.</summary>
    public Tensor Score(IReadOnlyList<string> prompts, Tensor images)
    {
        using var _ = no_grad();
        return Reward(prompts, images);
    }

    /// <summary>Sets the reward's normalisation: (raw − mean) / std.</summary>
    public void SetScoreNormalization(double mean, double std) => Config = std > 0
        ? Config with { ScoreMean = mean, ScoreStd = std }
        : throw new ArgumentException($"score std {std} must be positive");

    public static ToyAestheticModel FromPretrained(string dir, Device? device = null) =>
        PretrainedModel.Load<ToyAestheticModelConfig, ToyAestheticModel>(dir, config => new ToyAestheticModel(config, device: device));

    /// <summary>Writes <c>config.json</c> and the weights (image encoder included) as safetensors into <paramref name="dir"/>.</summary>
    public void SavePretrained(string dir) => PretrainedModel.Save(this, Config, dir);
}
