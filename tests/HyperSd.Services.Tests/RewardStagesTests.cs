using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Recipes;
using HyperSd.Services.Evaluator;
using HyperSd.Services.Hosting;
using HyperSd.Services.RewardScorer;
using HyperSd.Services.Stages;
using HyperSd.Testing;

namespace HyperSd.Services.Tests;

/// <summary>The reward-scorer's run stages: the learnt toy rewards are trained before the stages that use them, and the
/// evaluation's images are scored after the evaluation; both only when the recipe asks, bad settings refused by field.</summary>
public sealed class RewardStagesTests
{
    static IReadOnlyList<Stage> Plan(string yaml) =>
        [.. Runs.RunSubmission.Plan(StageCatalogue.Default(), yaml, "tiny.yaml", new WorkerOptions()).Run.Stages];

    static T Settings<T>(IEnumerable<Stage> stages, string name) => (T)StageCatalogue.Default().ReadSettings(stages.Single(s => s.Name == name));

    [Fact]
    public void The_learnt_rewards_are_trained_before_refl_and_the_evaluation_is_scored_after_it_on_the_reward_scorer()
    {
        var stages = Plan(TinyToy.Recipe());
        var names = stages.OrderBy(s => s.Index).Select(s => s.Name).ToList();
        Assert.True(names.IndexOf(TrainRewardsStage.StageName) < names.IndexOf("refl-k1"), string.Join(", ", names));
        Assert.Equal(names.IndexOf(EvaluateModelStage.StageName) + 1, names.IndexOf(ScoreEvaluationStage.StageName));
        Assert.All(stages.Where(s => s.Name is TrainRewardsStage.StageName or ScoreEvaluationStage.StageName),
            s => Assert.Equal(Roles.RewardScorer, s.Role));
        // ReFL's preference reward and the evaluation's two: each trained once, in the catalogue's order
        var train = Settings<TrainRewardsSettings>(stages, TrainRewardsStage.StageName);
        Assert.Equal(["toy-preference", "toy-aesthetic"], train.Rewards);
        Assert.Equal((3, 3, 4), (train.Training.PreferenceSteps, train.Training.AestheticSteps, train.Training.BatchSize));
        var score = Settings<ScoreEvaluationSettings>(stages, ScoreEvaluationStage.StageName);
        Assert.Equal(["toy-preference", "toy-aesthetic"], score.Rewards);
        Assert.Equal(6, score.BatchSize);
        // the evaluation keeps its images for the scoring only when there is one
        Assert.Equal(["toy-preference", "toy-aesthetic"], Settings<EvaluationSettings>(stages, EvaluateModelStage.StageName).Rewards);

        // only ReFL's learnt reward: trained, and no scoring
        stages = Plan(TinyToy.Recipe().Replace("  rewards: [toy-preference, toy-aesthetic]\n", ""));
        Assert.Equal(["toy-preference"], Settings<TrainRewardsSettings>(stages, TrainRewardsStage.StageName).Rewards);
        Assert.DoesNotContain(stages, s => s.Kind == ScoreEvaluationStage.Kind);
        // the evaluation scored by the committed recognizer's reward alone: nothing to train
        stages = Plan(TinyToy.Recipe(refl: false).Replace("rewards: [toy-preference, toy-aesthetic]", "rewards: [toy-structure]"));
        Assert.DoesNotContain(stages, s => s.Kind == TrainRewardsStage.Kind);
        Assert.Equal(["toy-structure"], Settings<ScoreEvaluationSettings>(stages, ScoreEvaluationStage.StageName).Rewards);
    }

    [Theory]
    [InlineData("rewards: [toy-preference, toy-aesthetic]", "rewards: [pickscore]", "evaluation.rewards.pickscore",
        "unknown reward for a toy model")]
    [InlineData("rewards: [toy-preference, toy-aesthetic]", "rewards: [toy-aesthetic, toy-aesthetic]", "evaluation.rewards",
        "must not repeat a reward")]
    [InlineData("rewards: [toy-preference, toy-aesthetic]", "rewards: []", "evaluation.rewards", "at least one must be positive")]
    [InlineData("preference_steps: 3", "preference_steps: 0", "rewards.toy_training.preference_steps", "must be at least 1")]
    [InlineData("toy-preference: 0.5", "toy-preference: -1", "refl.rewards.toy-preference", "must be a finite non-negative weight")]
    public void Bad_reward_settings_are_refused_at_submission_by_field(string find, string replace, string field, string why)
    {
        var yaml = TinyToy.Recipe().Replace(find, replace);
        var e = Assert.Throws<RecipeValidationException>(() =>
            Runs.RunSubmission.Plan(StageCatalogue.Default(), yaml, "tiny.yaml", new WorkerOptions()));
        Assert.Contains(e.Problems, p => p.Field == field && p.Message.Contains(why, StringComparison.Ordinal));
    }

    [Fact]
    public void A_stage_using_a_learnt_reward_the_run_did_not_train_is_refused_naming_the_rewards()
    {
        var stages = Plan(TinyToy.Recipe());
        IStageKind kind = new ScoreEvaluationStage();
        var evaluate = stages.Single(s => s.Name == EvaluateModelStage.StageName);
        var samples = new StageOutput(evaluate, new Artifact
        {
            Id = Guid.NewGuid(), Kind = ArtifactKind.Images, Path = "evaluate/samples", Sha256 = "", StageKind = EvaluateModelStage.Kind,
        });
        var e = Assert.Throws<InvalidDataException>(() =>
            kind.SelectInputs(Settings<ScoreEvaluationSettings>(stages, ScoreEvaluationStage.StageName), [samples]).ToList());
        Assert.Contains("toy-preference, toy-aesthetic are learnt by a train-rewards stage, and the run has none", e.Message);
        // a committed reward needs no training
        Assert.Equal([samples.Artifact], kind.SelectInputs(new ScoreEvaluationSettings(["toy-structure"], null, 6), [samples]));
    }
}
