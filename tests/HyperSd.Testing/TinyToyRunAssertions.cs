using HyperSd.Data.Entities;
using Xunit;

namespace HyperSd.Testing;

/// <summary>What a finished run of <see cref="TinyToy.Recipe"/> must have left in the store, embedded or distributed.</summary>
public static class TinyToyRunAssertions
{

    /// <summary>One dataset and trajectory shard, a LoRA per TSCD stage (k = 1 made from the trajectories and the
    /// k = 2 LoRA), ReFL's k = 1 LoRA (from TSCD's and the dataset's prompts), DMD's (from ReFL's and the prompts) and the
    /// unified LoRA (made from k = 2 and DMD's, which replaces the one it continued) with its merge report and fused UNet,
    /// checkpoints, eleven grids (teacher, untrained control, student and unified × 2 samplers, the k = 2 stage at 2 steps,
    /// ReFL's and DMD's at 1), the evaluation's reports; a dataset row of the recipe's 12 scenes; the generator's four images
    /// (from the unified LoRA); each evaluation row once, finite, for the teacher, the student and the unified LoRA at 1 and 2
    /// steps, the k = 2 stage at 2 steps and ReFL's and DMD's at 1, with the independent judge's adherence beside the
    /// recognizer's.</summary>
    public static void AssertOutputs(Run run, IReadOnlyList<Artifact> artifacts, Dataset dataset, IReadOnlyList<Evaluation> evaluations,
        Func<Artifact, string> pathOf)
    {
        int Count(ArtifactKind kind) => artifacts.Count(a => a.Kind == kind);
        Assert.Equal(1, Count(ArtifactKind.Dataset));
        Assert.Equal(1, Count(ArtifactKind.Trajectories));
        Assert.Equal(5, Count(ArtifactKind.Lora));
        Assert.True(Count(ArtifactKind.Checkpoint) >= 2, "a checkpoint of each TSCD stage");
        Assert.Equal(11, Count(ArtifactKind.Grid));
        // the evaluation's results.md and results.json, the merge's, the reward scores' rewards.md
        Assert.Equal(4, Count(ArtifactKind.Report));
        Assert.Equal(1, Count(ArtifactKind.Unet));
        Assert.Equal(2, Count(ArtifactKind.Images)); // the generator's, the evaluation's kept images
        var rewards = artifacts.Single(a => a.Kind == ArtifactKind.RewardModels);
        foreach (var reward in new[] { "toy-preference", "toy-aesthetic" })
            Assert.True(File.Exists(Path.Combine(pathOf(rewards), reward, "config.json")), $"{reward} was not trained");

        var stageIds = run.Stages.ToDictionary(s => s.Name, s => s.Id);
        var k1 = artifacts.Single(a => a.Kind == ArtifactKind.Lora && a.StageId == stageIds["tscd-k1"]);
        Assert.Equal(
            artifacts.Where(a => a.Kind == ArtifactKind.Trajectories || (a.Kind == ArtifactKind.Lora && a.StageId == stageIds["tscd-k2"]))
                .Select(a => a.Id).Order(),
            k1.Inputs.Select(i => i.InputArtifactId).Order());

        // ReFL: k = 1's LoRA on the dataset's prompts, with the run's learnt preference reward
        var refl = artifacts.Single(a => a.Kind == ArtifactKind.Lora && a.StageId == stageIds["refl-k1"]);
        Assert.Equal(("refl", 1, 1), (refl.StageKind, refl.Segments, refl.Steps));
        Assert.Equal(new[] { k1.Id, artifacts.Single(a => a.Kind == ArtifactKind.Dataset).Id, rewards.Id }.Order(),
            refl.Inputs.Select(i => i.InputArtifactId).Order());

        // DMD: ReFL's 1-step LoRA on the dataset's prompts
        var dmd = artifacts.Single(a => a.Kind == ArtifactKind.Lora && a.StageId == stageIds["dmd-k1"]);
        Assert.Equal(("dmd", 1, 1), (dmd.StageKind, dmd.Segments, dmd.Steps));
        Assert.Equal(new[] { refl.Id, artifacts.Single(a => a.Kind == ArtifactKind.Dataset).Id }.Order(),
            dmd.Inputs.Select(i => i.InputArtifactId).Order());

        // the unified LoRA: from k = 2's and DMD's 1-step LoRAs, for any step count
        var k2 = artifacts.Single(a => a.Kind == ArtifactKind.Lora && a.StageId == stageIds["tscd-k2"]);
        Assert.Equal((2, 2), (k2.Segments, k2.Steps));
        var unified = artifacts.Single(a => a.Kind == ArtifactKind.Lora && a.StageId == stageIds["unified"]);
        Assert.Equal(("merge-loras", null, null), (unified.StageKind, unified.Segments, unified.Steps));
        Assert.Equal(new[] { dmd.Id, k2.Id }.Order(), unified.Inputs.Select(i => i.InputArtifactId).Order());
        Assert.True(File.Exists(Path.Combine(pathOf(unified), "lora.safetensors")));
        Assert.True(File.Exists(Path.Combine(pathOf(unified), "pytorch_lora_weights.safetensors")));

        // the generator: 2 prompts × 2 images at 2 steps, each a PNG with its parameters, made with the unified LoRA,
        // the one input the stage chose (by the LoRA's typed stage kind)
        var images = artifacts.Single(a => a.Kind == ArtifactKind.Images && a.StageKind == Services.Generator.GenerateImagesStage.Kind);
        Assert.Equal([unified.Id], images.Inputs.Select(i => i.InputArtifactId));
        var dir = pathOf(images);
        Assert.Equal(["00000.png", "00001.png", "00002.png", "00003.png"], Directory.GetFiles(dir, "*.png").Select(Path.GetFileName).Order());
        var manifest = File.ReadAllLines(Path.Combine(dir, "manifest.jsonl"));
        Assert.Equal(4, manifest.Length);
        Assert.Contains("\"prompt\":\"a blue square at the top left\",\"seed\":3,\"steps\":2,\"sampler\":\"ddim-trailing\",\"model\":\"tiny/unified\"", manifest[3]);

        Assert.Equal(12, dataset.Count);
        Assert.Equal(evaluations.Count, evaluations.Select(v => (v.Model, v.Sampler, v.Steps, v.Metric)).Distinct().Count());
        Assert.Contains(evaluations, v => v is { Model: "teacher", Steps: 3, Metric: "fd" });
        foreach (var steps in new[] { 1, 2 })
        foreach (var metric in new[] { "fd", "kid", "adherence", "adherence-judge", "fd-judge", "kid-judge" })
        {
            Assert.Contains(evaluations, v => v.Model == "teacher" && v.Steps == steps && v.Metric == metric);
            Assert.Equal(2, evaluations.Count(v => v.Model == "untrained" && v.Steps == steps && v.Metric == metric));
            Assert.Equal(2, evaluations.Count(v => v.Model == "tscd-k1" && v.Steps == steps && v.Metric == metric));
            Assert.Equal(2, evaluations.Count(v => v.Model == "unified" && v.Steps == steps && v.Metric == metric));
        }
        // the k = 2 stage's LoRA as Hyper-SD's fixed 2-step LoRA, paired with the untrained control by the judge
        Assert.Equal([(2, "adherence"), (2, "adherence-judge"), (2, "adherence-judge-gain"), (2, "fd"), (2, "fd-judge"), (2, "kid"),
                (2, "kid-judge"), (2, "toy-aesthetic"), (2, "toy-preference")],
            evaluations.Where(v => v.Model == "tscd-k2").Select(v => (v.Steps, v.Metric)).Order());
        // ReFL's and DMD's LoRAs at their one step
        foreach (var model in new[] { "refl-k1", "dmd-k1" })
            Assert.Equal([(1, "adherence"), (1, "adherence-judge"), (1, "adherence-judge-gain"), (1, "fd"), (1, "fd-judge"), (1, "kid"),
                    (1, "kid-judge"), (1, "toy-aesthetic"), (1, "toy-preference")],
                evaluations.Where(v => v.Model == model).Select(v => (v.Steps, v.Metric)).Order());
        // a gain row for every student image set the control has a counterpart of, none for the teacher or the control itself
        Assert.Equal(evaluations.Where(v => v.Metric == "adherence" && v.Model is not ("teacher" or "untrained"))
                .Select(v => (v.Model, v.Sampler, v.Steps)).Order(),
            evaluations.Where(v => v.Metric == "adherence-judge-gain").Select(v => (v.Model, v.Sampler, v.Steps)).Order());
        // every evaluated image set scored by the reward-scorer with both learnt rewards
        var sets = evaluations.Where(v => v.Metric == "adherence").Select(v => (v.Model, v.Sampler, v.Steps)).ToList();
        foreach (var reward in new[] { "toy-preference", "toy-aesthetic" })
            Assert.Equal(sets.Order(), evaluations.Where(v => v.Metric == reward).Select(v => (v.Model, v.Sampler, v.Steps)).Order());
        Assert.All(evaluations, v => Assert.True(double.IsFinite(v.Value), $"{v.Model} {v.Sampler} {v.Steps} {v.Metric} = {v.Value}"));
        // 95 % intervals on adherence and KID, none on one image set's Fréchet distance
        Assert.All(evaluations, v => Assert.True(
            v.Metric is "fd" or "fd-judge" ? v.Low is null && v.High is null : v.Low <= v.Value && v.Value <= v.High,
            $"{v.Model} {v.Sampler} {v.Steps} {v.Metric} = {v.Value} [{v.Low}, {v.High}]"));
    }
}
