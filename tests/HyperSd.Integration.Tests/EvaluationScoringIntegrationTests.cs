using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Services.RewardScorer;
using Microsoft.EntityFrameworkCore;
using Xunit.Abstractions;

namespace HyperSd.Integration.Tests;

/// <summary>The evaluation's reward scores on a real deployment: the reward-scorer SIGKILLed while it scores the evaluation's
/// images is replaced, the new attempt scores only what has no score, and the run ends with one score per image and reward and
/// every evaluation row.</summary>
[Collection(nameof(Integration))]
public sealed class EvaluationScoringIntegrationTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_reward_scorer_killed_while_scoring_the_evaluation_is_replaced_and_nothing_is_lost_or_scored_twice()
    {
        await using var deployment = new Deployment(new Timings(LeaseTimeoutSeconds: 3));
        var workers = deployment.StartWorkers();
        // one image per fenced write, twice the prompts: seconds of scoring, for the kill to land in
        var runId = await deployment.SubmitAsync(edit: yaml => yaml.Replace("  prompts: 6", "  prompts: 12")
            .Replace("  batch_size: 6", "  batch_size: 1"));
        var planned = Deployment.StageOf(await deployment.RunAsync(runId), ScoreEvaluationStage.StageName);
        async Task<int> Scored()
        {
            await using var db = deployment.Db();
            return await db.EvaluationImageScores.CountAsync(v => v.RunId == runId);
        }
        await deployment.WaitUntilAsync(async () => await Scored() > 0, "the first evaluation scores", TimeSpan.FromMinutes(6));
        var killed = workers[Roles.RewardScorer];
        killed.Kill();
        int scoredAtKill = await Scored();
        await using (var db = deployment.Db())
            Assert.True(await db.StageAttempts.AnyAsync(a => a.StageId == planned.Id && a.Attempt == 1 && a.Outcome == null),
                "the scoring stage had ended before the kill");

        var replacement = deployment.StartWorker(Roles.RewardScorer);
        var run = await deployment.WaitForEndAsync(runId);
        Assert.True(run.State == RunState.Succeeded, $"{Deployment.Describe(run)}\n{deployment.WorkerLogs()}");
        await deployment.AssertCompleteAsync(runId); // every image set has both rewards' rows (TinyToyRunAssertions)

        var stage = Deployment.StageOf(run, ScoreEvaluationStage.StageName);
        var attempts = (await deployment.AttemptsAsync(run)).Where(a => a.StageId == stage.Id).OrderBy(a => a.Attempt).ToList();
        Assert.Equal([(1, AttemptOutcome.Lost, killed.Name), (2, AttemptOutcome.Succeeded, replacement.Name)],
            attempts.Select(a => (a.Attempt, a.Outcome!.Value, a.Owner)));
        await using var check = deployment.Db();
        var scores = await check.EvaluationImageScores.AsNoTracking().Where(v => v.RunId == runId).ToListAsync();
        var sets = await check.Evaluations.Where(v => v.RunId == runId && v.Metric == "adherence").CountAsync();
        Assert.Equal(sets * 12 * 2, scores.Count);
        Assert.Equal(scores.Count, scores.Select(v => (v.Model, v.Sampler, v.Steps, v.Reward, v.PromptIndex)).Distinct().Count());
        Assert.All(scores, v => Assert.True(double.IsFinite(v.Score), $"{v.Model} {v.Sampler}@{v.Steps} #{v.PromptIndex}: {v.Score}"));
        // the first attempt's scores were kept, the rest made by the second
        var byAttempt = scores.GroupBy(v => v.CreatedAt < attempts[1].StartedAt).ToDictionary(g => g.Key, g => g.Count());
        output.WriteLine($"killed {killed.Name} at {scoredAtKill} of {scores.Count} scores; " +
                         $"first attempt kept {byAttempt.GetValueOrDefault(true)}, second scored {byAttempt.GetValueOrDefault(false)}");
        Assert.True(scoredAtKill < scores.Count, $"all {scores.Count} scored before the kill");
        Assert.True(byAttempt.GetValueOrDefault(true) >= scoredAtKill, "scores of the killed attempt were lost");
    }
}
