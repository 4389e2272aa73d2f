using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Services.Jobs;
using HyperSd.Services.RewardScorer;
using Microsoft.EntityFrameworkCore;
using Xunit.Abstractions;

namespace HyperSd.Integration.Tests;

/// <summary>A best-of-n job on a real deployment: its scoring stage runs on a reward-scorer worker process; one SIGKILLed
/// mid-scoring leaves the rest to another, and the job ends with one score per candidate and the best of each image kept.</summary>
[Collection(nameof(Integration))]
public sealed class BestOfIntegrationTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_reward_scorer_killed_mid_scoring_leaves_one_score_per_candidate_and_the_best_of_each_image_kept()
    {
        await using var deployment = new Deployment();
        await deployment.StartWorkersAsync(Roles.Orchestrator, Roles.Generator);
        var scorers = new[] { deployment.StartWorker(Roles.RewardScorer), deployment.StartWorker(Roles.RewardScorer) };
        await Task.WhenAll(scorers.Select(w => w.WaitStartedAsync(TimeSpan.FromMinutes(2))));
        // 400 candidates scored one per fenced write: seconds of scoring, for the kill to land in
        var plan = GenerationJobPlanner.Plan(new GenerationJobSpec
        {
            Name = "best-of-2", Model = "toy", ImagesPerPrompt = 50, Steps = 1, Width = 32, Height = 32, BatchSize = 1, ChunkSize = 100,
            Seed = 7, BestOf = 2, Reward = "toy-structure",
            Prompts = [new("a red circle at the top left"), new("a blue square in the center"), new("a green triangle at the bottom right"),
                new("a small yellow circle at the top right and a large red square at the bottom left")],
        }, new GenerationLimits(), HyperSd.Testing.TestInputs.Temp);
        var id = await deployment.Jobs.SubmitAsync(plan);
        var runId = (await deployment.Jobs.ShowAsync(id))!.RunId;

        await deployment.WaitUntilAsync(async () => (await deployment.Jobs.ShowAsync(id))!.ImagesScored > 0, "the first scores",
            TimeSpan.FromMinutes(4));
        var held = Deployment.StageOf(await deployment.RunAsync(runId), ScoreImagesStage.StageName);
        var victim = scorers.Single(w => w.Name == held.LeaseOwner);
        victim.Kill();
        int scoredAtKill = (await deployment.Jobs.ShowAsync(id))!.ImagesScored!.Value;
        output.WriteLine($"killed {victim.Name} holding {held.Name} attempt {held.Attempt} at {scoredAtKill} of 400 scored");
        await using (var attempts = deployment.Db())
            Assert.True(await attempts.StageAttempts.AnyAsync(a => a.StageId == held.Id && a.Attempt == held.Attempt && a.Outcome == null),
                "the scoring stage had ended before the kill");

        var run = await deployment.WaitForEndAsync(runId, TimeSpan.FromMinutes(3));
        Assert.True(run.State == RunState.Succeeded, $"{Deployment.Describe(run)}\n{deployment.WorkerLogs()}");
        var status = (await deployment.Jobs.ShowAsync(id))!;
        Assert.Equal((200, 200, 400, 400), (status.ImagesDone, status.ImageCount, status.CandidatesDone, status.ImagesScored));
        var scoring = Deployment.StageOf(run, ScoreImagesStage.StageName);
        Assert.True(scoring.Attempt > held.Attempt, $"scoring attempt {scoring.Attempt}");
        await using var db = deployment.Db();
        Assert.NotEqual(victim.Name, (await db.StageAttempts.Where(a => a.StageId == scoring.Id).OrderBy(a => a.Attempt).LastAsync()).Owner);
        var rows = await db.GeneratedImages.AsNoTracking().Where(i => i.JobId == id).ToListAsync();
        Assert.Equal(plan.Candidates.Select(c => (c.PromptIndex, c.ImageIndex, c.Candidate!.Value, c.Seed)).Order(),
            rows.Select(r => (r.PromptIndex, r.ImageIndex, r.Candidate, r.Seed)).Order());
        Assert.All(rows, r => Assert.True(r.Score is { } s && double.IsFinite(s) && r.RewardName == "toy-structure", r.Path));
        foreach (var group in rows.GroupBy(r => (r.PromptIndex, r.ImageIndex)))
            Assert.Equal(group.Max(r => r.Score), Assert.Single(group, r => r.Kept).Score);
    }
}
