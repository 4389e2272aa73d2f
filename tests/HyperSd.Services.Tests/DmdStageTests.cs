using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Recipes;
using HyperSd.Services.DistributionMatching;
using HyperSd.Services.Hosting;
using HyperSd.Services.LoraMerger;
using HyperSd.Services.Stages;
using HyperSd.Testing;

namespace HyperSd.Services.Tests;

/// <summary>The DMD stage's planning (run end to end in the tiny recipe's embedded and distributed runs): it continues the
/// 1-step student of the latest stage that made one, on the dmd-trainer role, replaces it in the unified LoRA, and refuses
/// bad settings at submission by field, and a LoRA that is not 1-step when it runs.</summary>
public sealed class DmdStageTests
{
    static IReadOnlyList<Stage> Plan(string yaml) =>
        [.. Runs.RunSubmission.Plan(StageCatalogue.Default(), yaml, "tiny.yaml", new WorkerOptions()).Run.Stages];

    static T Settings<T>(IEnumerable<Stage> stages, string name) => (T)StageCatalogue.Default().ReadSettings(stages.Single(s => s.Name == name));

    [Fact]
    public void It_continues_refls_1_step_student_or_tscds_and_replaces_it_in_the_unified_lora()
    {
        var stages = Plan(TinyToy.Recipe());
        var dmd = stages.Single(s => s.Name == DmdStage.StageName);
        Assert.Equal((DmdStage.Kind, Roles.DmdTrainer), (dmd.Kind, dmd.Role));
        Assert.Equal("refl-k1", Settings<DmdStageSettings>(stages, "dmd-k1").Source);
        Assert.Equal(new Dictionary<string, double> { ["tscd-k2"] = 0.5, ["tscd-k1"] = 0, ["refl-k1"] = 0, ["dmd-k1"] = 0.5 },
            Settings<MergeSettings>(stages, "unified").Weights);

        stages = Plan(TinyToy.Recipe(refl: false));
        Assert.Equal("tscd-k1", Settings<DmdStageSettings>(stages, "dmd-k1").Source);
        Assert.Equal(new Dictionary<string, double> { ["tscd-k2"] = 0.5, ["tscd-k1"] = 0, ["dmd-k1"] = 0.5 },
            Settings<MergeSettings>(stages, "unified").Weights);
        Assert.DoesNotContain(Plan(TinyToy.Recipe(dmd: false)), s => s.Kind == DmdStage.Kind);
        Assert.DoesNotContain(Plan(TinyToy.Recipe(dmd: false).Replace("evaluation:", "dmd: {enabled: false}\nevaluation:")),
            s => s.Kind == DmdStage.Kind);
    }

    [Theory]
    [InlineData("segments: [2, 1]", "segments: [2]", "dmd", "no stage makes one: tscd.segments needs 1")]
    [InlineData("dmd: {", "dmd: {min_timestep: 0.5, max_timestep: 0.4, ", "dmd.max_timestep", "must be above min_timestep")]
    [InlineData("dmd: {", "dmd: {distribution_matching_weight: 0, regression_weight: 0, ", "dmd.distribution_matching_weight",
        "learn nothing")]
    [InlineData("dmd: {", "dmd: {rewards: {toy-structure: 0}, ", "dmd.rewards", "all zero")]
    [InlineData("dmd: {", "dmd: {rewards: {pickscore: 1}, ", "dmd.rewards.pickscore", "unknown reward for a toy model")]
    [InlineData("fake_score_rank: 4", "fake_score_rank: 0", "dmd.fake_score_rank", "must be at least 1")]
    [InlineData("dmd: {steps: 4", "dmd: {steps: 0", "dmd.steps", "must be at least 1")]
    [InlineData("dmd: {", "dmd: {real_guidance: 0.5, ", "dmd.real_guidance", "must be at least 1")]
    public void Bad_dmd_settings_are_refused_at_submission_by_field(string find, string replace, string field, string why)
    {
        var yaml = TinyToy.Recipe(refl: false).Replace(find, replace);
        if (find.StartsWith("segments", StringComparison.Ordinal))
            yaml = yaml.Replace("1: {mse: 0.8, adversarial: 0.1}", "");
        var e = Assert.Throws<RecipeValidationException>(() =>
            Runs.RunSubmission.Plan(StageCatalogue.Default(), yaml, "tiny.yaml", new WorkerOptions()));
        Assert.Contains(e.Problems, p => p.Field == field && p.Message.Contains(why, StringComparison.Ordinal));
    }

    [Fact]
    public void A_source_lora_that_is_not_1_step_is_refused_when_the_stage_runs()
    {
        var stages = Plan(TinyToy.Recipe(refl: false));
        IStageKind kind = new DmdStage();
        var settings = Settings<DmdStageSettings>(stages, "dmd-k1");
        StageOutput Output(string stage, ArtifactKind artifact, int? steps) => new(stages.Single(s => s.Name == stage),
            new Artifact { Id = Guid.NewGuid(), Kind = artifact, Path = $"{stage}/out", Sha256 = "", StageKind = "x", Steps = steps });
        var dataset = Output("dataset", ArtifactKind.Dataset, null);
        var e = Assert.Throws<InvalidDataException>(() =>
            kind.SelectInputs(settings, [dataset, Output("tscd-k1", ArtifactKind.Lora, 2)]).ToList());
        Assert.Contains("the LoRA of stage tscd-k1 (tscd-k1/out) is for 2 steps", e.Message);
        e = Assert.Throws<InvalidDataException>(() => kind.SelectInputs(settings, [dataset]).ToList());
        Assert.Contains("enhances the 1-step LoRA of stage tscd-k1, and the run has none", e.Message);
        var lora = Output("tscd-k1", ArtifactKind.Lora, 1);
        Assert.Equal([dataset.Artifact, lora.Artifact], kind.SelectInputs(settings, [dataset, lora]));
    }
}
