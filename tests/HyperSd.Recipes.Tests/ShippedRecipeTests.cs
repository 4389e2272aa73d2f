using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Toy;
using HyperSd.Distillation.Trajectories;

namespace HyperSd.Recipes.Tests;

public class ShippedRecipeTests
{
    public static TheoryData<string> Shipped => new() { "toy.yaml", "sd15-hyper.yaml", "sdxl-hyper.yaml" };

    /// <summary>The repository root: the first folder above the test binaries holding HyperSd.Pipeline.sln.</summary>
    internal static string RecipePath(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "HyperSd.Pipeline.sln"))) return Path.Combine(dir.FullName, "recipes", name);
        throw new DirectoryNotFoundException($"no HyperSd.Pipeline.sln above {AppContext.BaseDirectory}");
    }

    [Theory, MemberData(nameof(Shipped))]
    public void Loads_validates_and_maps_onto_valid_configs(string name)
    {
        var recipe = RecipeLoader.Load(RecipePath(name));

        Assert.Empty(recipe.Problems());
        recipe.ToTrajectoryOptions().Validate();
        var tscd = recipe.ToTscdConfig();
        foreach (int k in tscd.Stages) tscd.StageFor(k).Validate();
        Assert.Equal(recipe.Evaluation.Steps, recipe.ToEvaluationOptions().Steps);
    }

    [Theory, MemberData(nameof(Shipped))]
    public void Round_trips_through_its_normalised_yaml(string name)
    {
        var recipe = RecipeLoader.Load(RecipePath(name));
        var again = RecipeLoader.Parse(recipe.ToYaml(), name + " (normalised)");

        Assert.Equal(recipe.ToYaml(), again.ToYaml());
        Assert.Equal(recipe.Sha256(), again.Sha256());
        Assert.Equal(recipe.Tscd.Segments, again.Tscd.Segments);
        Assert.Equal(recipe.Tscd.Weights, again.Tscd.Weights);
        Assert.Equal(recipe.Model, again.Model);
        Assert.Equal(recipe.Dataset, again.Dataset);
        Assert.Equal(recipe.Trajectories, again.Trajectories);
        Assert.Equal(recipe.Tscd.Lora, again.Tscd.Lora);
    }

    [Fact]
    public void The_real_scale_recipes_use_pcm_settings()
    {
        var sd15 = RecipeLoader.Load(RecipePath("sd15-hyper.yaml"));
        var sdxl = RecipeLoader.Load(RecipePath("sdxl-hyper.yaml"));

        Assert.Equal((50, 4.0, 5.0, 5e-6, 512), (sd15.Trajectories.SolverSteps, sd15.Trajectories.GuidanceMin, sd15.Trajectories.GuidanceMax,
            sd15.Tscd.LearningRate, sd15.ImageResolution()));
        Assert.Equal((40, 6.0, 7.0, 2e-6, 1024), (sdxl.Trajectories.SolverSteps, sdxl.Trajectories.GuidanceMin, sdxl.Trajectories.GuidanceMax,
            sdxl.Tscd.LearningRate, sdxl.ImageResolution()));
        Assert.Equal(new[] { 8, 4, 2, 1 }, sd15.ToTscdConfig().Stages);
        Assert.Equal(new HyperSd.Diffusion.Lora.LoraConfig(64, 8), sd15.ToTscdConfig().Stage.Lora);
    }

    /// <summary>toy.yaml is the toy experiment's TSCD-with-adversarial variant, number for number.</summary>
    [Fact]
    public void The_toy_recipe_is_the_toy_experiments_adversarial_variant()
    {
        var recipe = RecipeLoader.Load(RecipePath("toy.yaml"));
        var toy = new ToyDistillationOptions();
        var variant = toy.Variants.Single(v => v.Name == "tscd 8-4-2-1 (mse+adv)").Config;

        var tscd = recipe.ToTscdConfig();
        Assert.Equal(variant.Stages, tscd.Stages);
        foreach (int k in variant.Stages) Assert.Equal(variant.StageFor(k), tscd.StageFor(k));

        // what ToyDistillation.Run passes to the trajectory generator and the evaluator
        Assert.Equal(new TrajectoryOptions(toy.TrajectoryCount, toy.Seed, 50, toy.GuidanceMin, toy.GuidanceMax, 64), recipe.ToTrajectoryOptions());
        Assert.Equal([SamplerSpec.DdimTrailing(), SamplerSpec.Tcd(0.3)], recipe.ToSamplerSpecs());
        Assert.Equal(SamplerSpec.Teacher(toy.TeacherGuidance), recipe.ToTeacherSamplerSpecs());
        var evaluation = recipe.ToEvaluationOptions();
        var expected = new EvaluationOptions { Steps = toy.Steps, Height = 32, Width = 32 };
        Assert.Equal(expected.Steps, evaluation.Steps);
        Assert.Equal(expected with { Steps = evaluation.Steps }, evaluation);
        Assert.Equal((toy.DatasetSize, (long)toy.DatasetSeed, toy.EvaluationPrompts, toy.RealImages, toy.TeacherReferenceSteps),
            (recipe.Dataset.Count!.Value, recipe.Dataset.Seed, recipe.Evaluation.Prompts!.Value, recipe.Evaluation.RealImages, recipe.Evaluation.TeacherSteps));
    }
}
