using System.CommandLine;
using System.Diagnostics;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Runs;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Cli.Commands;

/// <summary>
/// <c>hypersd bench evals</c>: latency of the evaluation queries the API and CLI answer (<see cref="EvaluationQueries"/>) over
/// a store holding many evaluation rows. It adds synthetic runs (recipe "bench-evals": a row per model × sampler × steps ×
/// metric), times each query p50/p95 against a primary-key lookup measured in the same run (the store's round trip), and
/// removes what it added unless --keep.
/// </summary>
public static class EvalsBenchCommand
{
    const string Recipe = "bench-evals";
    static readonly string[] Models = ["teacher", "tscd-k8", "tscd-k4", "tscd-k2", "tscd-k1"];
    static readonly string[] Samplers = ["tcd", "ddim-trailing"];
    static readonly int[] Steps = [1, 2, 4, 8];
    static readonly string[] Metrics = ["fd", "adherence", "clip-score", "aesthetic", "image-reward"];
    static int RowsPerRun => Models.Length * Samplers.Length * Steps.Length * Metrics.Length;

    public static Command Create()
    {
        var rows = new Option<int>("--rows") { Description = "evaluation rows to add", DefaultValueFactory = _ => 100_000 };
        var queries = new Option<int>("--queries") { Description = "timed repetitions of each query", DefaultValueFactory = _ => 200 };
        var keep = new Option<bool>("--keep") { Description = "leave the synthetic runs in the store" };
        var command = new Command("evals", "evaluation query latency (p50/p95) over many rows, on --postgres or the local store")
        {
            RunStore.StoreDirOption, RunStore.PostgresOption, rows, queries, keep,
        };
        command.SetAction(async (parse, ct) =>
        {
            var (count, repeats) = (parse.GetValue(rows), parse.GetValue(queries));
            if (count < RowsPerRun) throw new ArgumentException($"--rows: at least {RowsPerRun} (one run's rows), got {count}");
            if (repeats < 20) throw new ArgumentException($"--queries: at least 20 for a p95, got {repeats}");
            var store = RunStore.From(parse);
            await using var db = await store.OpenAsync();
            var runs = await SeedAsync(db, count / RowsPerRun, ct);
            try
            {
                await MeasureAsync(db, runs, repeats, ct);
            }
            finally
            {
                if (!parse.GetValue(keep)) await RemoveAsync(db, runs);
            }
        });
        return command;
    }

    static async Task<List<Guid>> SeedAsync(MetadataDbContext db, int runCount, CancellationToken ct)
    {
        var started = Stopwatch.StartNew();
        var random = new Random(0);
        var recipe = new StoredRecipe { Id = Guid.NewGuid(), Name = Recipe, Yaml = $"name: {Recipe}\n", Sha256 = "",
            CreatedAt = DateTimeOffset.UtcNow };
        db.Recipes.Add(recipe);
        var ids = new List<Guid>();
        var time = DateTimeOffset.UtcNow.AddDays(-runCount);
        db.ChangeTracker.AutoDetectChangesEnabled = false;
        for (int i = 0; i < runCount; i++)
        {
            var run = new Run
            {
                Id = Guid.NewGuid(), RecipeId = recipe.Id, Name = $"{Recipe}-{i % 20}", BaseModel = i % 2 == 0 ? "sd15" : "sdxl",
                State = RunState.Succeeded, CreatedAt = time.AddDays(i), UpdatedAt = time.AddDays(i),
            };
            var stage = new Stage
            {
                Id = Guid.NewGuid(), RunId = run.Id, Name = "evaluate", Index = 0, Kind = "evaluate", Role = "evaluator",
                State = StageState.Succeeded,
            };
            db.Runs.Add(run);
            db.Stages.Add(stage);
            foreach (var model in Models)
            foreach (var sampler in Samplers)
            foreach (var steps in Steps)
            foreach (var metric in Metrics)
            {
                double value = random.NextDouble() * (metric == "fd" ? 50 : 1);
                // every metric but the Fréchet distance has an interval, as stored evaluations do
                double? half = metric == "fd" ? null : 0.05 + 0.05 * random.NextDouble();
                db.Evaluations.Add(new Evaluation
                {
                    Id = Guid.NewGuid(), RunId = run.Id, StageId = stage.Id, Model = model, Sampler = sampler, Steps = steps,
                    Metric = metric, Value = value, Low = value - half, High = value + half, CreatedAt = run.CreatedAt,
                });
            }
            ids.Add(run.Id);
            if ((i + 1) % 50 == 0 || i == runCount - 1)
            {
                await db.SaveChangesAsync(ct);
                db.ChangeTracker.Clear();
            }
        }
        db.ChangeTracker.AutoDetectChangesEnabled = true;
        Console.WriteLine($"added {runCount} runs, {runCount * RowsPerRun:N0} evaluation rows in {started.Elapsed.TotalSeconds:F1} s " +
                          $"(store now holds {await db.Evaluations.CountAsync(ct):N0}; {db.Database.ProviderName})");
        return ids;
    }

    static async Task MeasureAsync(MetadataDbContext db, List<Guid> runs, int repeats, CancellationToken ct)
    {
        var paging = new Paging(0, Paging.DefaultLimit);
        var pick = new Random(1);
        Guid AnyRun() => runs[pick.Next(runs.Count)];
        var cases = new (string Name, Func<Task> Query)[]
        {
            ("baseline: a run by primary key", () =>
            {
                var id = AnyRun();
                return db.Runs.AsNoTracking().SingleAsync(r => r.Id == id, ct);
            }),
            ("query metric=fd steps=4, newest first", () => EvaluationQueries.QueryAsync(db,
                new EvaluationFilter(Metric: "fd", Steps: 4), paging, EvaluationSort.Created, true, ct)),
            ("query metric=adherence steps=1 by value", () => EvaluationQueries.QueryAsync(db,
                new EvaluationFilter(Metric: "adherence", Steps: 1, Sampler: "tcd"), paging, EvaluationSort.Value, true, ct)),
            ("query one run", () => EvaluationQueries.QueryAsync(db, new EvaluationFilter(Runs: [AnyRun()]), paging,
                EvaluationSort.Created, false, ct)),
            ("compare 2 runs", () => EvaluationQueries.CompareAsync(db, [AnyRun(), AnyRun()], new EvaluationFilter(), ct)),
            ("compare 5 runs, metric=fd", () => EvaluationQueries.CompareAsync(db,
                [.. Enumerable.Range(0, 5).Select(_ => AnyRun()).Distinct()],
                new EvaluationFilter(Metric: "fd"), ct)),
            ("best metric=fd", () => EvaluationQueries.BestAsync(db, new EvaluationFilter(Metric: "fd"), ct)),
            ("best metric=adherence (with intervals)", () =>
                EvaluationQueries.BestAsync(db, new EvaluationFilter(Metric: "adherence"), ct)),
        };
        Console.WriteLine($"{"query",-42} {"p50 ms",8} {"p95 ms",8} {"p50 ×base",10}");
        double? baseline = null;
        foreach (var (name, query) in cases)
        {
            for (int i = 0; i < 5; i++) await query(); // warm: plans, connections
            var times = new double[repeats];
            for (int i = 0; i < repeats; i++)
            {
                var watch = Stopwatch.StartNew();
                await query();
                times[i] = watch.Elapsed.TotalMilliseconds;
            }
            Array.Sort(times);
            double p50 = times[repeats / 2], p95 = times[(int)Math.Ceiling(repeats * 0.95) - 1];
            baseline ??= p50;
            Console.WriteLine($"{name,-42} {p50,8:F2} {p95,8:F2} {p50 / baseline.Value,10:F1}");
        }
    }

    static async Task RemoveAsync(MetadataDbContext db, List<Guid> runs)
    {
        foreach (var batch in runs.Chunk(500))
        {
            await db.Evaluations.Where(v => batch.Contains(v.RunId)).ExecuteDeleteAsync();
            await db.Stages.Where(s => batch.Contains(s.RunId)).ExecuteDeleteAsync();
            await db.Runs.Where(r => batch.Contains(r.Id)).ExecuteDeleteAsync();
        }
        await db.Recipes.Where(r => r.Name == Recipe && !db.Runs.Any(x => x.RecipeId == r.Id)).ExecuteDeleteAsync();
        Console.WriteLine($"removed the {runs.Count} synthetic runs");
    }
}
