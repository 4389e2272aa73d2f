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
    public void Loads_and_validates(string name) => Assert.Empty(RecipeLoader.Load(RecipePath(name)).Problems());

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
}
