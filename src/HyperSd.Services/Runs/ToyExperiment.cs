using System.Reflection;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Recipes;
using HyperSd.Services.Hosting;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

namespace HyperSd.Services.Runs;

/// <summary>
/// The toy distillation experiment (<c>hypersd toy distill</c>): recipes that differ only in their TSCD schedule, each run
/// through the same stages and store as <c>hypersd run</c>, compared from their stored evaluation rows.
/// </summary>
public static class ToyExperiment
{
    /// <summary>recipes/toy.yaml, embedded: TSCD 8 → 4 → 2 → 1 with the adversarial term.</summary>
    public static Recipe BaseRecipe()
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("toy.yaml")
            ?? throw new InvalidOperationException("recipes/toy.yaml is not embedded in HyperSd.Services");
        return RecipeLoader.Parse(new StreamReader(stream).ReadToEnd(), "recipes/toy.yaml");
    }

    /// <summary>The results table's budget (docs/results.md; recipes/toy.yaml is budgeted to run in minutes): 4,096 images,
    /// 8,192 trajectories, 100 steps per stage, 256 held-out prompts against 1,024 real images.</summary>
    public static Recipe Table(Recipe recipe) => recipe with
    {
        Dataset = recipe.Dataset with { Count = 4096 },
        Trajectories = recipe.Trajectories with { Count = 8192 },
        Tscd = recipe.Tscd with { StepsPerStage = 100 },
        Evaluation = recipe.Evaluation with { Prompts = 256, RealImages = 1024 },
    };

    /// <summary>The outcome tests' budget (<c>hypersd toy distill --small</c>): 1,024 images, 2,048 trajectories, 40 steps
    /// per stage, 128 held-out prompts against 512 real images at 2 and 4 steps, the teacher's reference at 8; no
    /// generation, no ReFL and no DMD (the table compares TSCD schedules; ReFL's outcome has its own test), so the unified
    /// LoRA weighs TSCD's stages equally (the recipe's weights name ReFL's and DMD's).</summary>
    public static Recipe Small(Recipe recipe) => recipe with
    {
        Generation = null, Refl = null, Dmd = null, Merge = recipe.Merge is { } merge ? merge with { Weights = null } : null,
        Dataset = recipe.Dataset with { Count = 1024 },
        Trajectories = recipe.Trajectories with { Count = 2048 },
        Tscd = recipe.Tscd with { StepsPerStage = 40 },
        Evaluation = recipe.Evaluation with { Steps = [2, 4], Prompts = 128, RealImages = 512, TeacherSteps = 8 },
    };

    /// <summary>The table's rows, from the adversarial recipe (the only one with ReFL and DMD): the LCM-style baseline (k = 1
    /// alone, consistency loss only, as many steps as all of TSCD's stages), the same with k = 4 (the progression's
    /// control), TSCD with the consistency loss only, and TSCD with the adversarial term.</summary>
    public static IReadOnlyList<Recipe> Variants(Recipe adversarial)
    {
        var t = adversarial.Tscd;
        var mseOnly = t.Segments.ToDictionary(k => k, _ => new LossWeightsRecipe { Mse = 1, Adversarial = 0 });
        return
        [
            adversarial with
            {
                Name = "toy-cd-k1", Merge = null, Refl = null, Dmd = null, // one LoRA: nothing to unify
                Tscd = t with
                {
                    Segments = [1], StepsPerStage = t.Segments.Count * t.StepsPerStage,
                    Weights = new Dictionary<int, LossWeightsRecipe> { [1] = new() { Mse = 1, Adversarial = 0 } }
                },
            },
            // the progression's control: one k = 4 stage with TSCD's whole budget, consistency loss only (no progression)
            adversarial with
            {
                Name = "toy-cd-k4", Merge = null, Refl = null, Dmd = null,
                Tscd = t with
                {
                    Segments = [4], StepsPerStage = t.Segments.Count * t.StepsPerStage,
                    Weights = new Dictionary<int, LossWeightsRecipe> { [4] = new() { Mse = 1, Adversarial = 0 } }
                },
            },
            // the unified LoRA, ReFL and DMD are measured once, on the main recipe's run
            adversarial with { Name = "toy-tscd-mse", Tscd = t with { Weights = mseOnly }, Merge = null, Refl = null, Dmd = null },
            adversarial with { Name = "toy-tscd-adv" },
        ];
    }

    /// <summary>Plans each recipe (from its normalised YAML) as a run; nothing is stored.</summary>
    public static IReadOnlyList<PlannedRun> Plan(StageCatalogue catalogue, IEnumerable<Recipe> recipes, WorkerOptions options) =>
        recipes.Select(r => RunSubmission.Plan(catalogue, r.ToYaml(), $"toy experiment: {r.Name}", options)).ToList();

    /// <summary>Submits the planned runs to a host's workers at once and waits until all have ended.</summary>
    public static async Task<IReadOnlyList<Run>> RunAsync(IServiceProvider services, IReadOnlyList<PlannedRun> planned,
        CancellationToken ct = default)
    {
        var submission = services.GetRequiredService<RunSubmission>();
        var ids = new List<Guid>();
        foreach (var run in planned) ids.Add(await submission.SubmitAsync(run, ct));
        return await WaitAsync(services.GetRequiredService<IDbContextFactory<MetadataDbContext>>(), ids, ct);
    }

    /// <summary>Waits until every run has ended; returns them with their stages.</summary>
    public static async Task<IReadOnlyList<Run>> WaitAsync(IDbContextFactory<MetadataDbContext> dbs, IReadOnlyList<Guid> runIds,
        CancellationToken ct = default)
    {
        while (true)
        {
            await using (var db = await dbs.CreateDbContextAsync(ct))
            {
                var runs = await db.Runs.AsNoTracking().Include(r => r.Stages.OrderBy(s => s.Index))
                    .Where(r => runIds.Contains(r.Id)).ToListAsync(ct);
                if (runs.All(r => r.State is RunState.Succeeded or RunState.Failed or RunState.Cancelled))
                    return runIds.Select(id => runs.Single(r => r.Id == id)).ToList();
            }
            await Task.Delay(TimeSpan.FromSeconds(1), ct);
        }
    }
}
