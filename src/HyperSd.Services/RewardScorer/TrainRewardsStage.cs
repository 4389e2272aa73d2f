using System.Text.Json;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.Toy;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using TorchSharp;

namespace HyperSd.Services.RewardScorer;

/// <summary>The learnt toy rewards a run uses and their training budget.</summary>
public sealed record TrainRewardsSettings(IReadOnlyList<string> Rewards, ToyRewardTrainingRecipe Training);

/// <summary>
/// Trains the toy world's learnt rewards that the recipe uses (ReFL's, DMD's or the evaluation's), on the reward-scorer role:
/// the ImageReward-style preference model on known-answer (prompt, better, worse) pairs and the LAION-shaped aesthetic head on
/// cleaner-versus-degraded renders, both reading the committed recognizer's features, both seeded. One folder per reward
/// (its <c>from_pretrained</c> layout), the stage's "rewardmodels" artifact; the stages that use a learnt reward read it.
/// Each reward's pairwise accuracy on held-out-caption pairs is reported, beside the untrained model's.
/// </summary>
public sealed class TrainRewardsStage : StageKind<TrainRewardsSettings>
{
    public const string Kind = "train-rewards", StageName = "train-rewards";
    public override string Name => Kind;
    public override string Role => Roles.RewardScorer;

    /// <summary>Pairs of held-out captions the accuracy is measured on (seeded apart from training's pairs).</summary>
    const int HeldOutPairs = 512, HeldOutSeed = 16_000_101;

    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs) => recipe.TrainedRewardsUsed() is { Count: > 0 } used
        ? [new(StageName, new TrainRewardsSettings(used, recipe.Rewards?.ToyTraining ?? new()))]
        : [];

    /// <summary>The run's learnt rewards, for a stage that uses any of <paramref name="rewards"/> (by name): none if it uses
    /// none of them.</summary>
    public static IEnumerable<Artifact> InputFor(IEnumerable<string> rewards, IReadOnlyList<StageOutput> earlier) =>
        rewards.Any(Recipe.TrainedToyRewards.Contains)
            ? [earlier.LastOrDefault(o => o.Artifact.Kind == ArtifactKind.RewardModels)?.Artifact
               ?? throw new InvalidDataException($"the rewards {string.Join(", ", rewards.Where(Recipe.TrainedToyRewards.Contains))} " +
                                                 $"are learnt by a {Kind} stage, and the run has none")]
            : [];

    protected override async Task ExecuteAsync(StageContext stage, TrainRewardsSettings s)
    {
        var device = torch.device(stage.Device);
        using var recognizer = StageModels.LoadRecognizer(stage.Options, stage.Device);
        var accuracy = new Dictionary<string, object>();
        foreach (var (name, index) in s.Rewards.Select((n, i) => (n, i)))
        {
            int steps = name == "toy-preference" ? s.Training.PreferenceSteps : s.Training.AestheticSteps;
            void Progress(int step, double loss)
            {
                stage.Report((index + (step + 1) / (double)steps) / s.Rewards.Count,
                    new { Reward = name, Step = step + 1, Steps = steps, Loss = loss });
                stage.Cancellation.ThrowIfCancellationRequested();
            }
            var trained = Train(name, steps, s.Training, recognizer, device, Progress);
            var untrained = Untrained(name, recognizer, device);
            var (prompts, better, worse) = HeldOutPairsOf(name);
            using (var b = better.to(device))
            using (var w = worse.to(device))
                accuracy[name] = new
                {
                    Trained = BradleyTerry.Accuracy(trained, prompts, b, w), Untrained = BradleyTerry.Accuracy(untrained, prompts, b, w),
                    Pairs = HeldOutPairs,
                };
            trained.SavePretrained(Path.Combine(stage.WorkDir, name));
            foreach (var d in new IDisposable[] { (IDisposable)trained, (IDisposable)untrained, better, worse }) d.Dispose();
            stage.Report((index + 1.0) / s.Rewards.Count, new { HeldOutAccuracy = accuracy });
        }
        // the measured accuracies travel with the models
        await File.WriteAllTextAsync(Path.Combine(stage.WorkDir, "accuracy.json"),
            JsonSerializer.Serialize(accuracy, new JsonSerializerOptions { WriteIndented = true }), stage.Cancellation);
        await stage.AddOutputAsync(ArtifactKind.RewardModels, stage.WorkDir, "rewards");
    }

    static IPairwiseReward Train(string name, int steps, ToyRewardTrainingRecipe t, ToyRecognizer recognizer, torch.Device device,
        Action<int, double> onStep) => name switch
    {
        "toy-preference" => ToyPreferenceTrainer.Train(
            new ToyPreferenceTrainingOptions { Steps = steps, BatchSize = t.BatchSize, Seed = t.Seed }, recognizer, device: device,
            onStep: onStep),
        "toy-aesthetic" => ToyAestheticTrainer.Train(
            new ToyAestheticTrainingOptions { Steps = steps, BatchSize = t.BatchSize, Seed = t.Seed }, recognizer, device, onStep),
        _ => throw new ArgumentException($"'{name}' is not a learnt toy reward (known: {string.Join(", ", Recipe.TrainedToyRewards)})"),
    };

    /// <summary>The same model before training (its frozen image tower the trained recognizer's): the accuracy's control.</summary>
    static IPairwiseReward Untrained(string name, ToyRecognizer recognizer, torch.Device device) => name == "toy-preference"
        ? new ToyPreferenceModel(new ToyPreferenceModelConfig { ImageEncoder = recognizer.Config }, recognizer, device)
        : new ToyAestheticModel(new ToyAestheticModelConfig { ImageEncoder = recognizer.Config }, recognizer, device);

    /// <summary>Known-answer pairs of held-out captions for the reward's training task, clean renders.</summary>
    static (IReadOnlyList<string>, torch.Tensor, torch.Tensor) HeldOutPairsOf(string name) => name == "toy-preference"
        ? ToyPreferenceTrainer.Render(ToyPreferencePairs.Sample(new Random(HeldOutSeed), HeldOutPairs, ToyCaptionSplit.HeldOut), 0,
            new torch.Generator((ulong)HeldOutSeed, torch.CPU))
        : ToyAestheticTrainer.Pairs(HeldOutPairs, ToyCaptionSplit.HeldOut, new ToyAestheticTrainingOptions(), new Random(HeldOutSeed),
            new torch.Generator((ulong)HeldOutSeed, torch.CPU));
}
