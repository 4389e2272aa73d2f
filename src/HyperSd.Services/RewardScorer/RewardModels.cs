using HyperSd.Data.Entities;
using HyperSd.Diffusion.IO;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Rewards;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Hosting;
using TorchSharp;

namespace HyperSd.Services.RewardScorer;

/// <summary>The reward models a stage loads by name (the names <see cref="Recipe.Problems"/> allows), with their weights, and
/// what disposes them.</summary>
public sealed class RewardModels : IDisposable
{
    readonly List<IDisposable> owned = [];

    public WeightedReward Reward { get; }

    RewardModels(Func<RewardModels, IEnumerable<(IImageReward, double)>> load)
    {
        try { Reward = new WeightedReward(load(this).ToList()); }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <param name="weights">Weight by reward name; rewards of weight 0 are not loaded.</param>
    /// <param name="paths">The real-scale models' files (recipe <c>rewards:</c>, resolved).</param>
    /// <param name="stage">The stage: its worker's options and device, and the learnt toy rewards among its inputs (the run's
    /// train-rewards stage's folder).</param>
    public static RewardModels Load(IReadOnlyDictionary<string, double> weights, RewardsRecipe? paths, StageContext stage)
    {
        var trained = stage.OptionalInput(ArtifactKind.RewardModels) is { } a ? stage.PathOf(a) : null;
        return new(models => weights.Where(w => w.Value != 0)
            .Select(w => (models.Create(w.Key, paths, trained, stage.Options, stage.Device), w.Value)));
    }

    IImageReward Create(string name, RewardsRecipe? paths, string? trained, WorkerOptions options, string device)
    {
        string Required(string? path, string field) => path ?? throw new ArgumentException($"needs {field} in the recipe");
        string Trained() => Path.Combine(trained ?? throw new InvalidDataException(
            $"learnt by the run's {TrainRewardsStage.StageName} stage, and this stage has no such input"), name);
        try
        {
            return name switch
            {
                "toy-structure" or "toy-structure-logp" => new ToyStructuralReward(Own(StageModels.LoadRecognizer(options, device)),
                    logProbability: name.EndsWith("-logp", StringComparison.Ordinal)),
                "toy-preference" => Own(ToyPreferenceModel.FromPretrained(Trained(), torch.device(device))),
                "toy-aesthetic" => Own(ToyAestheticModel.FromPretrained(Trained(), torch.device(device))),
                "laion-aesthetic" => Own(LaionAestheticPredictor.FromPretrained(Required(paths?.Clip, "rewards.clip"),
                    Required(paths?.AestheticPredictor, "rewards.aesthetic_predictor"), torch.device(device))),
                "pickscore" => Own(PreferenceScore.FromPretrained(Required(paths?.Pickscore, "rewards.pickscore"),
                    device: torch.device(device))),
                _ => throw new ArgumentException("unknown (known: " +
                    $"{string.Join(", ", Recipe.ToyRewards.Concat(Recipe.TrainedToyRewards).Concat(Recipe.RealRewards))})"),
            };
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or WeightLoadException)
        {
            // the loaders name the file, key and shapes; this names the reward the recipe asked for
            throw new InvalidDataException($"reward '{name}': {e.Message}", e);
        }
    }

    T Own<T>(T model) where T : IDisposable
    {
        owned.Add(model);
        return model;
    }

    public void Dispose()
    {
        foreach (var m in owned) m.Dispose();
        owned.Clear();
    }
}
