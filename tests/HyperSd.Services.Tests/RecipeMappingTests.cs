using HyperSd.Diffusion.Lora;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Recipes;
using HyperSd.Services.Evaluator;
using HyperSd.Services.LoraMerger;
using HyperSd.Services.DistributionMatching;
using HyperSd.Services.RewardScorer;
using HyperSd.Services.Runs;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.Stages;

namespace HyperSd.Services.Tests;

/// <summary>The recipe onto the trainers' configs, in the one place that does it.</summary>
public class RecipeMappingTests
{
    const string Source = "recipes/x.yaml";

    const string Valid = """
        name: small
        model:
          source: toy
        dataset:
          source: toy
          count: 64
        trajectories:
          count: 128
        tscd:
          segments: [4, 2, 1]
          loss: huber
          learning_rate: 1.0e-3
        evaluation:
          prompts: 16
        """;

    static Recipe Parse(string yaml) => RecipeLoader.Parse(yaml, Source);

    static readonly Hosting.WorkerOptions Options = new() { Inputs = Testing.TestInputs.Temp };

    [Fact]
    public void Omitted_fields_map_to_the_recipe_defaults()
    {
        var recipe = Parse(Valid);
        Assert.Equal(new LoraConfig(64, 8), RecipeMapping.SegmentStage(recipe, 4).Lora);
        Assert.Equal(0.001, RecipeMapping.SegmentStage(recipe, 4).HuberC);
        Assert.Equal(32, RecipeMapping.ImageResolution(recipe));
        var problem = Assert.Single(Assert.Throws<RecipeValidationException>(() =>
            RecipeMapping.ImageResolution(Parse(Valid.Replace("  count: 64", "  count: 64\n  resolution: 64")))).Problems);
        Assert.Equal("dataset.resolution", problem.Field);
    }

    /// <summary>Submission resolves everything before anything is stored or any host starts, and names the file.</summary>
    [Fact]
    public void Planning_a_bad_recipe_names_the_file_and_field_and_a_missing_file_says_so()
    {
        var catalogue = StageCatalogue.Default();
        var e = Assert.Throws<RecipeValidationException>(() =>
            RunSubmission.Plan(catalogue, Valid.Replace("  count: 64", "  count: 64\n  resolution: 64"), "recipes/bad.yaml", Options));
        Assert.StartsWith("recipes/bad.yaml: 1 problem(s)", e.Message);
        Assert.Contains("recipes/bad.yaml: dataset.resolution: toy images are 32 px", e.Message);
        var missing = Assert.Throws<FileNotFoundException>(() => RunSubmission.Plan(catalogue, "/nonexistent/recipe.yaml", Options));
        Assert.Contains("no such recipe file: /nonexistent/recipe.yaml", missing.Message);
        var none = Path.Combine(Path.GetTempPath(), $"no-prompts-{Guid.NewGuid():N}.txt");
        var prompts = Assert.Throws<RecipeValidationException>(() =>
            RunSubmission.Plan(catalogue, Valid.Replace("  prompts: 16", $"  prompts_file: {none}"), "r.yaml", Options));
        Assert.Contains($"r.yaml: evaluation.prompts_file: no such file or folder: '{none}'", prompts.Message);
    }

    [Fact]
    public void The_learning_rate_schedule_reaches_every_stage()
    {
        var recipe = Parse(Valid.Replace("  loss: huber", "  loss: huber\n  lr_scheduler: cosine\n  lr_warmup_steps: 20"));
        Assert.Equal(LearningRateSchedule.Cosine, RecipeMapping.SegmentStage(recipe, 2).LearningRateSchedule);
        Assert.Equal(20, RecipeMapping.SegmentStage(recipe, 1).WarmupSteps);
        Assert.Equal(LearningRateSchedule.Constant, RecipeMapping.SegmentStage(Parse(Valid), 4).LearningRateSchedule);
    }

    /// <summary>The adversarial step's settings reach the stage config; omitted, they are the config's own defaults (PCM's).
    /// </summary>
    [Fact]
    public void The_adversarial_settings_map_and_default_to_the_stage_configs()
    {
        var defaults = new SegmentStageConfig();
        var mapped = RecipeMapping.SegmentStage(Parse(Valid), 1);
        Assert.Equal((defaults.AdversarialSchedule, defaults.AdversarialNoise, defaults.DiscriminatorHeadsPerFeature,
                defaults.DiscriminatorWeightDecay, defaults.DiscriminatorMaxGradNorm, defaults.WarmupSteps),
            (mapped.AdversarialSchedule, mapped.AdversarialNoise, mapped.DiscriminatorHeadsPerFeature, mapped.DiscriminatorWeightDecay,
                mapped.DiscriminatorMaxGradNorm, mapped.WarmupSteps));
        Assert.Equal(0, RecipeMapping.Trajectories(Parse(Valid)).EmptyPromptProbability);
        var recipe = Parse(Valid);
        var flipped = RecipeMapping.SegmentStage(recipe with
        {
            Tscd = recipe.Tscd with
            {
                AdversarialSchedule = AdversarialSteps.Joint, AdversarialNoise = NoiseDraw.Shared, DiscriminatorHeadsPerFeature = 1,
                DiscriminatorWeightDecay = 0, DiscriminatorMaxGradNorm = null,
            },
        }, 1);
        Assert.Equal((AdversarialSchedule.Joint, AdversarialNoise.Shared, 1, 0.0, (double?)null),
            (flipped.AdversarialSchedule, flipped.AdversarialNoise, flipped.DiscriminatorHeadsPerFeature, flipped.DiscriminatorWeightDecay,
                flipped.DiscriminatorMaxGradNorm));
    }

    [Fact]
    public void The_generation_sampler_maps_with_its_eta()
    {
        var recipe = Parse(Valid + "\ngeneration:\n  prompts: [a red circle]\n  sampler: tcd\n  tcd_eta: 0.3\n");
        var sampler = RecipeMapping.Sampler(recipe.Generation!.Sampler, recipe.Generation.TcdEta);
        Assert.Equal(("TCDScheduler", 0.3), (sampler.Scheduler, sampler.Eta));
    }

    [Fact]
    public void Full_fine_tuning_maps_to_no_lora()
    {
        var recipe = Parse(Valid.Replace("  loss: huber", "  loss: huber\n  lora: null"));
        Assert.Null(RecipeMapping.SegmentStage(recipe, 4).Lora);
        Assert.Null(RecipeMapping.StudentLora(recipe));
    }

    [Fact]
    public void Mse_loss_maps_to_no_huber_c_and_weights_map_per_stage()
    {
        var recipe = Parse(Valid.Replace("loss: huber", "loss: mse\n  weights: {1: {mse: 0.5, adversarial: 0.2}, 2: {mse: 1}, 4: {mse: 1}}"));

        Assert.Null(RecipeMapping.SegmentStage(recipe, 4).HuberC);
        Assert.Equal(new LossWeights(0.5, 0.2), RecipeMapping.SegmentStage(recipe, 1).Weights);
        Assert.Equal(new LossWeights(1, 0), RecipeMapping.SegmentStage(recipe, 4).Weights);
        Assert.Equal(1e-3, RecipeMapping.SegmentStage(recipe, 4).LearningRate);
        Assert.Equal(recipe.Tscd.StepsPerStage, RecipeMapping.SegmentStage(recipe, 2).Steps);
    }

    public static TheoryData<string> Shipped => new() { "toy.yaml", "sd15-hyper.yaml", "sdxl-hyper.yaml" };

    [Theory, MemberData(nameof(Shipped))]
    public void The_shipped_recipes_map_onto_valid_configs(string name)
    {
        var recipe = RecipeLoader.Load(RecipePath(name));
        RecipeMapping.Trajectories(recipe).Validate();
        foreach (int k in recipe.Tscd.Segments) RecipeMapping.SegmentStage(recipe, k).Validate();
        Assert.Equal(recipe.Evaluation.Steps, RecipeMapping.Evaluation(recipe).Steps);
    }

    [Fact]
    public void The_real_scale_recipes_use_pcm_settings()
    {
        var sd15 = RecipeLoader.Load(RecipePath("sd15-hyper.yaml"));
        var sdxl = RecipeLoader.Load(RecipePath("sdxl-hyper.yaml"));

        Assert.Equal((50, 4.0, 5.0, 5e-6, 512), (sd15.Trajectories.SolverSteps, sd15.Trajectories.GuidanceMin, sd15.Trajectories.GuidanceMax,
            sd15.Tscd.LearningRate, RecipeMapping.ImageResolution(sd15)));
        Assert.Equal((40, 6.0, 7.0, 2e-6, 1024), (sdxl.Trajectories.SolverSteps, sdxl.Trajectories.GuidanceMin, sdxl.Trajectories.GuidanceMax,
            sdxl.Tscd.LearningRate, RecipeMapping.ImageResolution(sdxl)));
        Assert.Equal(new[] { 8, 4, 2, 1 }, sd15.Tscd.Segments);
        Assert.Equal(new LoraConfig(64, 8), RecipeMapping.SegmentStage(sd15, 8).Lora);
        // PCM's adversarial step: SD1.5's discriminator has 4 heads per map and decays its weights, SDXL's 1 head and no decay
        var (k1, xl1) = (RecipeMapping.SegmentStage(sd15, 1), RecipeMapping.SegmentStage(sdxl, 1));
        Assert.Equal((AdversarialSchedule.Alternate, AdversarialNoise.Independent, 4, 1e-3, (double?)1.0, 0),
            (k1.AdversarialSchedule, k1.AdversarialNoise, k1.DiscriminatorHeadsPerFeature, k1.DiscriminatorWeightDecay,
                k1.DiscriminatorMaxGradNorm, k1.WarmupSteps));
        Assert.Equal((1, 0.0), (xl1.DiscriminatorHeadsPerFeature, xl1.DiscriminatorWeightDecay));
        Assert.Equal((0.0, 0.0), (sd15.Trajectories.EmptyPromptProbability, sdxl.Trajectories.EmptyPromptProbability));
    }

    /// <summary>The planned stages carry the settings the recipe resolves to: one TSCD stage per k, and the evaluation's
    /// prompts and samplers, so a worker needs nothing else.</summary>
    [Fact]
    public void Planning_the_toy_recipe_stores_each_stages_typed_settings()
    {
        var catalogue = StageCatalogue.Default();
        var recipe = RecipeLoader.Load(RecipePath("toy.yaml"));
        var stages = catalogue.Plan(RecipeInputs.Resolve(recipe, new InputRoots(), "toy.yaml"), Guid.NewGuid(), 3);

        Assert.Equal(["dataset", "trajectories", "tscd-k8", "tscd-k4", "tscd-k2", "tscd-k1", "train-rewards", "refl-k1", "refl-k4", "dmd-k1",
                "unified", "evaluate", "score-evaluation", "generate"], stages.Select(s => s.Name));
        var refl = (ReflStageSettings)catalogue.ReadSettings(stages.Single(s => s.Name == "refl-k4"));
        Assert.Equal((RecipeMapping.Refl(recipe, 4), "tscd-k4"), (refl.Config, refl.Source));
        Assert.Equal(new Dictionary<string, double> { ["toy-structure-logp"] = 1.0 }, refl.Rewards);
        var dmd = (DmdStageSettings)catalogue.ReadSettings(stages.Single(s => s.Name == "dmd-k1"));
        Assert.Equal((RecipeMapping.Dmd(recipe), "refl-k1"), (dmd.Config, dmd.Source));
        // the recipe's weights (DMD's LoRA mostly), kept whole at rank 64
        var merge = (MergeSettings)catalogue.ReadSettings(stages.Single(s => s.Name == "unified"));
        Assert.Equal(new Dictionary<string, double>
        {
            ["tscd-k8"] = 0.05, ["tscd-k4"] = 0, ["tscd-k2"] = 0.05, ["tscd-k1"] = 0, ["refl-k1"] = 0, ["refl-k4"] = 0.05,
            ["dmd-k1"] = 0.85,
        }, merge.Weights);
        Assert.Equal((64, true), (merge.Rank, merge.ClampRank));
        // without weights, ReFL's and DMD's LoRAs replace the ones they continued, all weighed equally
        var equal = recipe with { Merge = recipe.Merge! with { Weights = null } };
        var planned = catalogue.Plan(RecipeInputs.Resolve(equal, new InputRoots(), "toy.yaml"), Guid.NewGuid(), 3);
        Assert.Equal(new Dictionary<string, double>
        {
            ["tscd-k8"] = 0.25, ["tscd-k4"] = 0, ["tscd-k2"] = 0.25, ["tscd-k1"] = 0, ["refl-k1"] = 0, ["refl-k4"] = 0.25,
            ["dmd-k1"] = 0.25,
        }, ((MergeSettings)catalogue.ReadSettings(planned.Single(s => s.Name == "unified"))).Weights);
        var k4 = (SegmentStageSettings)catalogue.ReadSettings(stages.Single(s => s.Name == "tscd-k4"));
        Assert.Equal(RecipeMapping.SegmentStage(recipe, 4), k4.Config with { Lora = k4.Config.Lora, });
        Assert.Equal(recipe.Model, k4.Model);
        var evaluation = (EvaluationSettings)catalogue.ReadSettings(stages.Single(s => s.Name == "evaluate"));
        Assert.Equal([SamplerSpec.DdimTrailing(), SamplerSpec.Tcd(0.3)], evaluation.StudentSamplers);
        Assert.Equal(SamplerSpec.Teacher(3.0), evaluation.TeacherSamplers);
        Assert.Equal(128, evaluation.Prompts!.Count);
        Assert.Equal(RecipeMapping.Evaluation(recipe).Steps, evaluation.Options.Steps);
        Assert.Equal(RecipeMapping.Evaluation(recipe) with { Steps = evaluation.Options.Steps }, evaluation.Options);
    }

    internal static string RecipePath(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "HyperSd.Pipeline.sln"))) return Path.Combine(dir.FullName, "recipes", name);
        throw new DirectoryNotFoundException($"no HyperSd.Pipeline.sln above {AppContext.BaseDirectory}");
    }
}
