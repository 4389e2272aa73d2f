using HyperSd.Distillation.Toy;
using HyperSd.Services.Runs;
using Xunit.Abstractions;

namespace HyperSd.Services.Tests;

/// <summary><c>hypersd toy ablate</c>'s run at a tiny budget: every chosen variant trains its four stages from its pool and
/// gets a row, read against the controls, with paired differences to the first.</summary>
public class ToyAblationTests(ITestOutputHelper output) : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("ablate-").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    static HyperSd.Recipes.Recipe Tiny()
    {
        var small = ToyExperiment.Small(ToyExperiment.BaseRecipe());
        return small with
        {
            Dataset = small.Dataset with { Count = 32 },
            Trajectories = small.Trajectories with { Count = 16, BatchSize = 16 },
            Tscd = small.Tscd with { StepsPerStage = 2, BatchSize = 2 },
            Evaluation = small.Evaluation with { Prompts = 4, RealImages = 8, BatchSize = 4 },
        };
    }

    [Fact]
    public void The_variants_flip_one_setting_each_and_every_one_gets_a_row()
    {
        var all = ToyAblation.Variants(ToyExperiment.Small(ToyExperiment.BaseRecipe()));
        Assert.Equal(["pcm", "joint", "heads-1", "shared-noise", "d-adam", "warmup-4", "empty-0.1", "pool-512", "pool-5120", "seed-1",
            "seed-2"], all.Select(v => v.Name));
        // the outcome tests' budget draws 4 stages × 40 steps × 32 = 5,120 samples from its 2,048 pairs
        Assert.Equal(0.4, ToyAblation.PairsPerSampleSeen(all[0].Recipe), 12);
        var pcm = all[0].Recipe;
        Assert.All(all.Skip(1), v => Assert.NotEqual(pcm with { Name = v.Recipe.Name }, v.Recipe));

        var chosen = ToyAblation.Variants(Tiny()).Where(v => v.Name is "pcm" or "joint" or "pool-1").ToList();
        var lines = new List<string>();
        var table = ToyAblation.Run(chosen, new ToyAblation.Options(dir, ToyWorld.PretrainedTeacherDir, ToyWorld.PretrainedRecognizerDir,
            Redraws: 2, Parallel: 1), lines.Add);
        output.WriteLine(string.Join("\n", lines));
        output.WriteLine(table);
        Assert.Equal(2, Directory.GetFiles(Path.Combine(dir, "pools")).Length); // pcm and joint share one pool
        Assert.Contains("| pool-1 | trajectories.count: 1 | 0.06 |", table);
        var rows = table.Split('\n').Where(l => l.StartsWith("| ")).ToList();
        Assert.Equal(["variant", "teacher, DDIM trailing, CFG 3", "untrained", "pcm", "joint", "pool-1"],
            rows.Select(r => r.Split('|')[1].Trim()).Where(c => c != "---"));
        Assert.Contains("| pcm | none (PCM's settings) | 1.00 |", table);
        Assert.Contains(lines, l => l.StartsWith("joint: k = 1, 2 steps"));
        Assert.True(File.Exists(Path.Combine(dir, "results.md")));
    }
}
