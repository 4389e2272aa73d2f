using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Distillation.Evaluation;
using HyperSd.Recipes;
using HyperSd.Services.Evaluator;
using HyperSd.Services.Execution;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.RewardScorer;

/// <summary>The rewards to score the evaluation's images with (and their files at real scale), and images per forward pass.</summary>
public sealed record ScoreEvaluationSettings(IReadOnlyList<string> Rewards, RewardsRecipe? RewardFiles, int BatchSize);

/// <summary>
/// The evaluation's reward scores, on the reward-scorer role (which holds the reward models): every image the evaluate-model
/// stage kept (<see cref="EvaluationSamples"/>) is scored by each of <c>evaluation.rewards</c>, one stored score per image
/// and reward; then each (model, sampler, steps) gets an evaluation row per reward, the mean with Student's t interval. Each
/// batch's scores are one fenced write, so a lost lease records nothing of its batch, and a new attempt scores only the
/// images without a score: a restarted reward-scorer loses nothing and scores nothing twice.
/// </summary>
public sealed class ScoreEvaluationStage : StageKind<ScoreEvaluationSettings>
{
    public const string Kind = "score-evaluation", StageName = "score-evaluation";
    public override string Name => Kind;
    public override string Role => Roles.RewardScorer;

    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs) => recipe.Evaluation.Rewards is { Count: > 0 } r
        ? [new(StageName, new ScoreEvaluationSettings(r, recipe.Rewards, recipe.Evaluation.BatchSize))]
        : [];

    protected override IEnumerable<Artifact> SelectInputs(ScoreEvaluationSettings settings, IReadOnlyList<StageOutput> earlier) =>
        [Required(earlier, ArtifactKind.Images, EvaluateModelStage.Kind), .. TrainRewardsStage.InputFor(settings.Rewards, earlier)];

    sealed record Key(string Model, string Sampler, int Steps, string Reward);

    protected override async Task ExecuteAsync(StageContext stage, ScoreEvaluationSettings s)
    {
        var samples = EvaluationSamples.Read(stage.PathOf(stage.Input(ArtifactKind.Images)));
        int n = samples.Prompts.Count, total = samples.Sets.Count * n * s.Rewards.Count;
        var scored = await ScoresAsync(stage);
        int done = scored.Values.Sum(v => v.Count);
        void Report(string? reward = null) => stage.Report(done / (double)total, new { Scored = done, Total = total, Reward = reward });
        Report();
        foreach (var reward in s.Rewards)
        {
            var todo = samples.Sets.Select(set => (Set: set, Indices: Enumerable.Range(0, n)
                    .Except(scored.GetValueOrDefault(new Key(set.Model, set.Sampler, set.Steps, reward))?.Select(v => v.Prompt) ?? [])
                    .ToList()))
                .Where(t => t.Indices.Count > 0).ToList();
            if (todo.Count == 0) continue;
            using var models = RewardModels.Load(new Dictionary<string, double> { [reward] = 1 }, s.RewardFiles, stage);
            foreach (var (set, indices) in todo)
            foreach (var batch in indices.Chunk(s.BatchSize))
            {
                stage.Cancellation.ThrowIfCancellationRequested();
                var paths = batch.Select(i => Path.Combine(samples.Root, set.Dir, EvaluationSamples.ImageFile(i))).ToList();
                var values = ScoreImagesStage.Score(models, batch.Select(i => samples.Prompts[i]).ToList(), paths, stage.Device);
                for (int k = 0; k < batch.Length; k++)
                    if (!double.IsFinite(values[k]))
                        throw new InvalidDataException(
                            $"{paths[k]}: the {reward} reward gave {values[k]} for '{samples.Prompts[batch[k]]}'");
                await stage.WriteFencedAsync(db =>
                {
                    var now = stage.Options.Clock.GetUtcNow();
                    db.EvaluationImageScores.AddRange(batch.Select((i, k) => new EvaluationImageScore
                    {
                        Id = Guid.NewGuid(), RunId = stage.RunId, StageId = stage.StageId, Model = set.Model, Sampler = set.Sampler,
                        Steps = set.Steps, PromptIndex = i, Reward = reward, Score = values[k], CreatedAt = now,
                    }));
                    return Task.FromResult(0);
                });
                done += batch.Length;
                Report(reward);
            }
        }

        var rows = new List<EvaluationRow>();
        foreach (var (key, scores) in await ScoresAsync(stage))
        {
            if (scores.Count != n)
                throw new InvalidDataException($"{key.Model} {key.Sampler}@{key.Steps}: {scores.Count} {key.Reward} scores for {n} images");
            rows.Add(ModelEvaluator.ScoreRow(key.Model, key.Sampler, key.Steps, key.Reward, scores.Select(v => v.Score).ToList()));
        }
        await EvaluateModelStage.StoreRowsAsync(stage, rows);
        var report = Path.Combine(stage.WorkDir, "rewards.md");
        await File.WriteAllTextAsync(report, $"# Reward scores\n\n{samples.Sets.Count} image sets of {n} prompts, scored by " +
            $"{string.Join(", ", s.Rewards)}; intervals are Student's t on the images (95 %).\n\n" + EvaluationTable.Markdown(rows),
            stage.Cancellation);
        await stage.AddOutputAsync(ArtifactKind.Report, report, "rewards.md");
    }

    /// <summary>The run's stored scores by set and reward, in prompt order.</summary>
    static async Task<Dictionary<Key, List<(int Prompt, double Score)>>> ScoresAsync(StageContext stage)
    {
        await using var db = await stage.Db.CreateDbContextAsync(stage.Cancellation);
        var all = await db.EvaluationImageScores.AsNoTracking().Where(v => v.RunId == stage.RunId)
            .OrderBy(v => v.PromptIndex).ToListAsync(stage.Cancellation);
        return all.GroupBy(v => new Key(v.Model, v.Sampler, v.Steps, v.Reward))
            .ToDictionary(g => g.Key, g => g.Select(v => (v.PromptIndex, v.Score)).ToList());
    }
}
