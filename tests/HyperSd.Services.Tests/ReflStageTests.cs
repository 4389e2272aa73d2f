using HyperSd.Data.Entities;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Recipes;
using HyperSd.Services.DatasetPrep;
using HyperSd.Services.Execution;
using HyperSd.Services.Hosting;
using HyperSd.Services.LoraMerger;
using HyperSd.Services.RewardScorer;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.Stages;
using HyperSd.Services.TeacherTrajectories;
using HyperSd.Testing;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

namespace HyperSd.Services.Tests;

/// <summary>The ReFL stage on the embedded default: a tiny run's k = 1 student learns from the toy structural reward on the
/// reward-scorer role, and its LoRA is what the run's later stages read for one step (the merge, the evaluation with both
/// judges, the generator); bad settings are refused at submission by field, a reward model or a LoRA that does not fit when it
/// runs, losing nothing.</summary>
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
        var options = store.TinyRunOptions(catalogue, recognizer);
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
        Assert.Equal(["adherence", "adherence-judge", "adherence-judge-gain", "fd", "fd-judge", "kid", "kid-judge", "toy-aesthetic",
                "toy-preference"],
            rows.Where(v => v is { Model: "refl-k1", Steps: 1 }).Select(v => v.Metric).Order());
        Assert.Contains(rows, v => v is { Model: "tscd-k1", Steps: 1, Metric: "adherence-judge" });
    }

    /// <summary>A reward model whose weights do not fit (the recognizer of the toy reward with a misshapen key) fails the ReFL
    /// stage at once, naming the reward, the file, the key and both shapes; the TSCD stages' LoRAs stand, and once the file is
    /// fixed the resumed run retries only ReFL, which continues the same TSCD LoRA.</summary>
    [Fact]
    public async Task A_reward_model_that_does_not_fit_fails_refl_naming_it_loses_nothing_and_the_fixed_run_resumes()
    {
        var catalogue = new StageCatalogue().Add(new PrepareDatasetStage()).Add(new GenerateTrajectoriesStage())
            .Add(new TrainSegmentStage()).Add(new ReflStage());
        var (teacher, recognizer) = TinyToy.WriteModels(Path.Combine(store.Root, "models"));
        var file = Path.Combine(recognizer, PretrainedModel.WeightsName + ".safetensors");
        var good = await File.ReadAllBytesAsync(file);
        var tensors = SafeTensors.Load(file);
        var shape = $"[{string.Join(", ", tensors["shape_head.weight"].shape)}]";
        tensors["shape_head.weight"] = TorchSharp.torch.zeros(3, 5);
        SafeTensors.Save(file, tensors);
        var options = store.TinyRunOptions(catalogue, recognizer);
        using var host = TestHosts.Start(options, catalogue);
        var planned = Runs.RunSubmission.Plan(catalogue, TinyToy.Recipe(teacher, merge: false, dmd: false)
            .Replace(", toy-preference: 0.5", ""), "tiny", options); // the recognizer's reward only: ReFL is the first to read it
        var runId = await host.Services.GetRequiredService<Runs.RunSubmission>().SubmitAsync(planned);
        static bool Ended(Run r) => r.State is RunState.Succeeded or RunState.Failed or RunState.Cancelled;
        var run = await store.WaitForAsync(runId, Ended, "the run to fail", TimeSpan.FromMinutes(4));

        Assert.Equal(RunState.Failed, run.State);
        var refl = run.Stages.Single(s => s.Name == "refl-k1");
        Assert.Equal((StageState.Failed, 1), (refl.State, refl.Attempt)); // bad data: not retried
        Assert.Contains("reward 'toy-structure-logp': cannot load ToyRecognizer weights", refl.Error);
        Assert.Contains($"key 'shape_head.weight' in {file} has shape [3, 5], the model expects {shape}", refl.Error);
        Assert.All(run.Stages.Where(s => s != refl), s => Assert.Equal(StageState.Succeeded, s.State));
        List<Artifact> before;
        await using (var db = store.CreateDbContext())
            before = await db.Artifacts.AsNoTracking().Where(a => a.RunId == runId).ToListAsync();
        Assert.DoesNotContain(before, a => a.StageId == refl.Id);
        Assert.Equal(2, before.Count(a => a.Kind == ArtifactKind.Lora));
        foreach (var a in before) await store.Artifacts.VerifyAsync(a.Path, a.Sha256);

        await File.WriteAllBytesAsync(file, good);
        Assert.Equal(RunState.Running, await host.Services.GetRequiredService<Runs.RunControl>().ResumeAsync(runId));
        run = await store.WaitForAsync(runId, Ended, "the resumed run to end", TimeSpan.FromMinutes(4));
        await host.StopAsync();
        Assert.True(run.State == RunState.Succeeded, $"run {run.State}: {run.Error}");
        var retried = run.Stages.Single(s => s.Name == "refl-k1");
        Assert.Equal((StageState.Succeeded, 2), (retried.State, retried.Attempt));
        Assert.All(run.Stages.Where(s => s != retried), s => Assert.Equal(1, s.Attempt)); // not run again
        await using var after = store.CreateDbContext();
        var artifacts = await after.Artifacts.AsNoTracking().Include(a => a.Inputs).Where(a => a.RunId == runId).ToListAsync();
        Assert.All(before, a => Assert.Contains(artifacts, b => (b.Id, b.Sha256) == (a.Id, a.Sha256)));
        var tscd = before.Single(a => a.Kind == ArtifactKind.Lora && a.StageId == run.Stages.Single(s => s.Name == "tscd-k1").Id);
        var lora = artifacts.Single(a => a.Kind == ArtifactKind.Lora && a.StageId == refl.Id);
        Assert.Contains(tscd.Id, lora.Inputs.Select(i => i.InputArtifactId));
    }

    /// <summary>Where a stage continues a LoRA (ReFL and DMD on TSCD's, the evaluation), one trained at another rank than the
    /// recipe's tscd.lora.rank is refused naming the file, a key and both ranks.</summary>
    [Fact]
    public void A_lora_of_another_rank_than_the_recipes_is_refused_where_a_stage_continues_it()
    {
        var (teacher, _) = TinyToy.WriteModels(Path.Combine(store.Root, "models"));
        using var unet = UNet2DConditionModel.FromPretrained(Path.Combine(teacher, "unet"));
        var final = Directory.CreateDirectory(Path.Combine(store.Root, "final")).FullName;
        var file = Path.Combine(final, SegmentStageLayout.StudentFile);
        using (var generator = new TorchSharp.torch.Generator(0))
        using (var rank4 = SegmentStudent.WithLora(unet, new LoraConfig(Rank: 4, Alpha: 4), generator))
            SafeTensors.Save(file, StateDict.Of(rank4.Trainable));

        var e = Assert.Throws<InvalidDataException>(() => StageModels.LoadStudent(unet, new LoraConfig(Rank: 8, Alpha: 8), final));
        Assert.StartsWith($"{file}: the LoRA has rank 4 (key '", e.Message);
        Assert.Matches(@"\.lora_down\.weight' \[4, \d+", e.Message);
        Assert.Contains("the recipe's tscd.lora.rank is 8", e.Message);
        using var same = StageModels.LoadStudent(unet, new LoraConfig(Rank: 4, Alpha: 4), final);
        Assert.All(same.Lora!.Layers.Values, l => Assert.Equal(4, l.Rank));
    }

    [Theory]
    [InlineData("refl: {students: [4]}", "refl.students", "k = 4 is not a TSCD stage")]
    [InlineData("refl: {rewards: {toy-structure: 0}}", "refl.rewards", "all zero")]
    [InlineData("refl: {rewards: {pickscore: 1}}", "refl.rewards.pickscore", "unknown reward for a toy model")]
    [InlineData("refl: {reward_scale: 0}", "refl.reward_scale", "must be positive")]
    [InlineData("refl: {stop_from: 1}", "refl.stop_from", "must be in [0, 1)")]
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
