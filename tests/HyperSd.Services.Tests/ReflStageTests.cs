using HyperSd.Data.Entities;
using HyperSd.Recipes;
using HyperSd.Services.Hosting;
using HyperSd.Services.LoraMerger;
using HyperSd.Services.RewardScorer;
using HyperSd.Services.Stages;
using HyperSd.Testing;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

namespace HyperSd.Services.Tests;

/// <summary>The ReFL stage on the embedded default: a tiny run's k = 1 student learns from the toy structural reward on the
/// reward-scorer role, and its LoRA is what the run's later stages read for one step (the merge, the evaluation with both
/// judges, the generator); bad settings are refused at submission by field.</summary>
[Collection(nameof(TorchGlobalState))]
public sealed class ReflStageTests : IDisposable
{
    readonly TestStore store = new();

    public void Dispose() => store.Dispose();

    [Fact]
    public async Task A_tiny_runs_k1_student_learns_from_the_reward_and_the_later_stages_read_its_lora()
    {
        var catalogue = StageCatalogue.Default();
        var (teacher, recognizer) = TinyToy.WriteModels(Path.Combine(store.Root, "models"));
        var options = store.WorkerOptions(o =>
        {
            o.Roles = [.. catalogue.Roles];
            o.ToyRecognizerDir = recognizer;
            o.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
            o.ReconcileInterval = TimeSpan.FromSeconds(1);
        }, catalogue);
        using var host = TestHosts.Start(options, catalogue);
        var yaml = TinyToy.Recipe(teacher, dmd: false);
        var planned = Runs.RunSubmission.Plan(catalogue, yaml, "tiny", options);
        var runId = await host.Services.GetRequiredService<Runs.RunSubmission>().SubmitAsync(planned);
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(4);
        Run run;
        while ((run = await store.RunAsync(runId)).State is not (RunState.Succeeded or RunState.Failed or RunState.Cancelled))
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"run still {run.State}");
            await Task.Delay(200);
        }
        await host.StopAsync();
        Assert.True(run.State == RunState.Succeeded,
            $"run {run.State}: {run.Error}\n" + string.Join("\n", run.Stages.Select(s => $"{s.Name} {s.State}#{s.Attempt}: {s.Error}")));

        await using var db = store.CreateDbContext();
        var artifacts = await db.Artifacts.AsNoTracking().Include(a => a.Inputs).Where(a => a.RunId == runId).ToListAsync();
        var stages = run.Stages.ToDictionary(s => s.Name);
        Assert.Equal(["tscd-k2", "tscd-k1", "refl-k1", "unified"],
            run.Stages.Where(s => s.Name.StartsWith("tscd", StringComparison.Ordinal) || s.Name is "refl-k1" or "unified")
                .OrderBy(s => s.Index).Select(s => s.Name));
        Assert.Equal((ReflStage.Kind, "reward-scorer"), (stages["refl-k1"].Kind, stages["refl-k1"].Role));
        Artifact LoraOf(string stage) => artifacts.Single(a => a.Kind == ArtifactKind.Lora && a.StageId == stages[stage].Id);
        var refl = LoraOf("refl-k1");
        Assert.Equal((ReflStage.Kind, 1, 1), (refl.StageKind, refl.Segments, refl.Steps));
        var dataset = artifacts.Single(a => a.Kind == ArtifactKind.Dataset);
        var rewards = artifacts.Single(a => a.Kind == ArtifactKind.RewardModels);
        Assert.Equal(new[] { dataset.Id, LoraOf("tscd-k1").Id, rewards.Id }.Order(), refl.Inputs.Select(i => i.InputArtifactId).Order());
        Assert.Contains(artifacts, a => a.Kind == ArtifactKind.Checkpoint && a.StageId == stages["refl-k1"].Id);

        // the unified LoRA: ReFL's k = 1 LoRA in place of TSCD's, by default
        Assert.Equal(new[] { LoraOf("tscd-k2").Id, refl.Id }.Order(), LoraOf("unified").Inputs.Select(i => i.InputArtifactId).Order());
        // the evaluation: ReFL's LoRA at its one step, by the recognizer and by the independent judge
        var rows = await db.Evaluations.AsNoTracking().Where(v => v.RunId == runId).ToListAsync();
        Assert.Equal(["adherence", "adherence-judge", "fd", "kid", "toy-aesthetic", "toy-preference"],
            rows.Where(v => v is { Model: "refl-k1", Steps: 1 }).Select(v => v.Metric).Order());
        Assert.Contains(rows, v => v is { Model: "tscd-k1", Steps: 1, Metric: "adherence-judge" });
    }

    [Theory]
    [InlineData("refl: {students: [4]}", "refl.students", "k = 4 is not a TSCD stage")]
    [InlineData("refl: {rewards: {toy-structure: 0}}", "refl.rewards", "all zero")]
    [InlineData("refl: {rewards: {pickscore: 1}}", "refl.rewards.pickscore", "unknown reward for a toy model")]
    [InlineData("refl: {reward_scale: 0}", "refl.reward_scale", "must be positive")]
    public void Bad_refl_settings_are_refused_at_submission_by_field(string section, string field, string why)
    {
        var yaml = TinyToy.Recipe(refl: false).Replace("evaluation:", section + "\nevaluation:");
        var e = Assert.Throws<RecipeValidationException>(() =>
            Runs.RunSubmission.Plan(StageCatalogue.Default(), yaml, "tiny.yaml", new WorkerOptions()));
        Assert.Contains(e.Problems, p => p.Field == field && p.Message.Contains(why, StringComparison.Ordinal));
    }

    [Fact]
    public void Real_scale_rewards_need_their_files()
    {
        var yaml = TinyToy.Recipe(refl: false).Replace("evaluation:", "refl: {rewards: {laion-aesthetic: 1}}\nevaluation:")
            .Replace("source: toy\n  architecture", "source: diffusers\n  path: /models/sd15\n  architecture");
        var e = Assert.Throws<RecipeValidationException>(() => RecipeLoader.Parse(yaml, "tiny.yaml"));
        var fields = e.Problems.Select(p => p.Field).ToList();
        Assert.Contains("rewards.clip", fields);
        Assert.Contains("rewards.aesthetic_predictor", fields);
    }
}
