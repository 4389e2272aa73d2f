using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Metrics;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Toy;
using HyperSd.Distillation.Trajectories;
using HyperSd.Recipes;
using HyperSd.Services.Evaluator;
using HyperSd.Services.Execution;
using static TorchSharp.torch;

namespace HyperSd.Services.Runs;

/// <summary>
/// TSCD's adversarial step with PCM's settings, each flipped back to the project's earlier behaviour one at a time
/// (<c>hypersd toy ablate</c>). What the services do, at library level to fit the budget: one toy dataset, one trajectory
/// pool per distinct trajectories section, each variant's TSCD stages mapped from its recipe as the services map them
/// (<see cref="RecipeMapping.SegmentStage"/>), then stage k = 4's LoRA at 4 steps and k = 1's at 1 step (DDIM trailing),
/// measured on independent re-draws of held-out captions (new prompts, noise and real reference each): the toy-FD with its
/// re-draw interval and its paired difference to PCM's (same prompts, noise and reference per re-draw), and the
/// independent judge's adherence with Wilson's interval over all re-draws.
/// </summary>
public static class ToyAblation
{
    /// <summary>A recipe and the setting it flips (none for PCM's).</summary>
    public sealed record Variant(string Name, string Flipped, Recipe Recipe);

    public sealed record Options(string OutDir, string TeacherDir, string RecognizerDir, int Redraws = 5, int Parallel = 2);

    /// <summary>The step counts measured: stage k's LoRA at k steps (Hyper-SD's fixed-step LoRAs).</summary>
    public static readonly int[] MeasuredStages = [1, 4];

    /// <summary>PCM's settings (recipes/toy.yaml), then each of its differences from the earlier behaviour flipped back: joint
    /// updates, one head per feature map, shared re-noising, D without weight decay or clipping; a warm-up of a tenth of a
    /// stage's steps (PCM's argparse 500 of 5,000, which its constant scheduler ignores); 10 % empty prompts; the trajectory
    /// pool at a tenth of and at as many pairs as the stages draw. Last, PCM's settings with two other seeds (trajectories,
    /// batches, initialisation): one training run per variant, so a difference counts where it exceeds the seeds' own.
    /// </summary>
    public static IReadOnlyList<Variant> Variants(Recipe pcm)
    {
        var t = pcm.Tscd;
        int draws = Draws(pcm), warmup = t.StepsPerStage / 10;
        Variant V(string name, string flipped, Recipe recipe) => new(name, flipped, recipe with { Name = $"ablate-{name}" });
        Variant Tscd(string name, string flipped, TscdRecipe tscd) => V(name, flipped, pcm with { Tscd = tscd });
        Variant Pool(string name, string flipped, TrajectoriesRecipe trajectories) =>
            V(name, flipped, pcm with { Trajectories = trajectories });
        return
        [
            V("pcm", "none (PCM's settings)", pcm),
            Tscd("joint", "adversarial_schedule: joint", t with { AdversarialSchedule = AdversarialSteps.Joint }),
            Tscd("heads-1", "discriminator_heads_per_feature: 1", t with { DiscriminatorHeadsPerFeature = 1 }),
            Tscd("shared-noise", "adversarial_noise: shared", t with { AdversarialNoise = NoiseDraw.Shared }),
            Tscd("d-adam", "discriminator_weight_decay: 0, discriminator_max_grad_norm: null",
                t with { DiscriminatorWeightDecay = 0, DiscriminatorMaxGradNorm = null }),
            Tscd($"warmup-{warmup}", $"lr_warmup_steps: {warmup}", t with { LrWarmupSteps = warmup }),
            Pool("empty-0.1", "trajectories.empty_prompt_probability: 0.1", pcm.Trajectories with { EmptyPromptProbability = 0.1 }),
            Pool($"pool-{draws / 10}", $"trajectories.count: {draws / 10}", pcm.Trajectories with { Count = draws / 10 }),
            Pool($"pool-{draws}", $"trajectories.count: {draws}", pcm.Trajectories with { Count = draws }),
            V("seed-1", $"seed: {pcm.Seed + 1} (none: the seed's own spread)", pcm with { Seed = pcm.Seed + 1 }),
            V("seed-2", $"seed: {pcm.Seed + 2} (none: the seed's own spread)", pcm with { Seed = pcm.Seed + 2 }),
        ];
    }

    /// <summary>Trajectory samples the stages draw (with replacement): stages × steps × batch.</summary>
    public static int Draws(Recipe recipe) => recipe.Tscd.Segments.Count * recipe.Tscd.StepsPerStage * recipe.Tscd.BatchSize;

    /// <summary>Pairs in the pool per training sample drawn (PCM draws a fresh teacher step each time: 1 with no reuse).</summary>
    public static double PairsPerSampleSeen(Recipe recipe) => recipe.Trajectories.Count / (double)Draws(recipe);

    /// <summary>Trains and measures <paramref name="variants"/> (finished stages are loaded, so a rerun resumes) and returns
    /// the results table, also written to results.md in <see cref="Options.OutDir"/>.</summary>
    public static string Run(IReadOnlyList<Variant> variants, Options options, Action<string> log, CancellationToken ct = default)
    {
        foreach (var v in variants) v.Recipe.Validate(v.Name);
        var first = variants[0].Recipe;
        int threads = get_num_threads();
        if (options.Parallel > 1) set_num_threads(1); // one core per variant beats two threads contending per op
        var benches = new List<Bench>();
        try
        {
            var pools = Pools(variants, options, log, ct); // made on the same thread count as the training, so a rerun matches
            benches.AddRange(Enumerable.Range(0, options.Parallel).Select(i => new Bench(first, options, i)));
            var controls = Stopwatch.StartNew();
            benches[0].EvaluateControls(first.Evaluation.TeacherGuidance);
            log($"controls (teacher, untrained) measured in {controls.Elapsed.TotalSeconds:F0} s");
            var trainSeconds = new ConcurrentDictionary<string, double>();
            var queue = new ConcurrentQueue<Variant>(variants);
            Parallel.ForEach(benches, new ParallelOptions { MaxDegreeOfParallelism = benches.Count }, bench =>
            {
                while (queue.TryDequeue(out var variant))
                    trainSeconds[variant.Name] = TrainAndMeasure(variant, pools[RecipeMapping.Trajectories(variant.Recipe)], bench,
                        options.OutDir, log, ct);
            });
            var table = Table(variants, benches, trainSeconds, options.Redraws);
            File.WriteAllText(Path.Combine(options.OutDir, "results.md"), table);
            return table;
        }
        finally
        {
            foreach (var b in benches) b.Dispose();
            set_num_threads(threads);
        }
    }

    /// <summary>One trajectory pool per distinct trajectories section, made once from one dataset and kept in the out folder.
    /// </summary>
    static Dictionary<TrajectoryOptions, string> Pools(IReadOnlyList<Variant> variants, Options options, Action<string> log,
        CancellationToken ct)
    {
        var recipe = variants[0].Recipe;
        var pools = variants.Select(v => RecipeMapping.Trajectories(v.Recipe)).Distinct()
            .ToDictionary(o => o, o => Path.Combine(options.OutDir, "pools",
                string.Create(CultureInfo.InvariantCulture, $"trajectories-{o.Count}-empty{o.EmptyPromptProbability}.safetensors")));
        var missing = pools.Where(p => !File.Exists(p.Value)).ToList();
        if (missing.Count == 0) return pools;
        using var teacher = StableDiffusionPipeline.FromPretrained(options.TeacherDir);
        using var data = ToyWorld.CreateDataset(recipe.Dataset.Count!.Value, checked((int)recipe.Dataset.Seed), teacher.Tokenizer,
            teacher.Vae);
        foreach (var (pool, path) in missing)
        {
            var watch = Stopwatch.StartNew();
            using var shard = TrajectorySampling.Generate(teacher.Unet, teacher.Conditioner, StageModels.TrainingScheduler(teacher), data,
                pool, ct);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            shard.Save(path + ".tmp");
            File.Move(path + ".tmp", path, overwrite: true);
            log($"trajectory pool {Path.GetFileName(path)}: {pool.Count} pairs in {watch.Elapsed.TotalSeconds:F0} s");
        }
        return pools;
    }

    /// <summary>Trains the variant's stages in order, each from the last one's student, measuring the stages of
    /// <see cref="MeasuredStages"/> as they finish; returns the training's wall time (from each stage's metrics, so a stage
    /// loaded finished counts the time its run took).</summary>
    static double TrainAndMeasure(Variant variant, string pool, Bench bench, string outDir, Action<string> log, CancellationToken ct)
    {
        using var shard = TrajectoryShard.Load(pool);
        var scheduler = StageModels.TrainingScheduler(bench.Teacher);
        double seconds = 0;
        SegmentStudent? student = null;
        try
        {
            foreach (int k in variant.Recipe.Tscd.Segments)
            {
                var result = SegmentConsistencyTrainer.Train(RecipeMapping.SegmentStage(variant.Recipe, k), bench.Teacher.Unet,
                    bench.Teacher.Conditioner, scheduler, [shard], SegmentStageLayout.ForStage(Path.Combine(outDir, variant.Name), k).Dir,
                    cancellationToken: ct, student: student);
                student = result.Student;
                var m = result.Metrics;
                seconds += m.Steps / m.StepsPerSecond;
                log(string.Create(CultureInfo.InvariantCulture, $"{variant.Name}: k = {k}, {m.Steps} steps in " +
                    $"{m.Steps / m.StepsPerSecond:F0} s, consistency {m.InitialLoss:G4} -> {m.FinalLoss:G4}, " +
                    $"G {m.FinalGeneratorLoss:G4}, D {m.FinalDiscriminatorLoss:G4}"));
                if (MeasuredStages.Contains(k)) bench.Evaluate(Model(variant.Name, k), student, k);
            }
        }
        finally { student?.Dispose(); }
        return seconds;
    }

    static string Model(string variant, int k) => $"{variant}/tscd-k{k}";

    /// <summary>One slot's models (a teacher per slot: a student's LoRA attaches to it) and its re-draws.</summary>
    sealed class Bench : IDisposable
    {
        public StableDiffusionPipeline Teacher { get; }
        readonly ToyRecognizer recognizer, judge;
        public IReadOnlyList<ModelEvaluation> Redraws { get; }

        public Bench(Recipe recipe, Options options, int slot)
        {
            Teacher = StableDiffusionPipeline.FromPretrained(options.TeacherDir);
            recognizer = ToyRecognizer.FromPretrained(options.RecognizerDir);
            judge = ToyRecognizer.FromPretrained(ToyWorld.PretrainedJudgeDir);
            var evaluation = RecipeMapping.Evaluation(recipe) with { Steps = MeasuredStages };
            int prompts = recipe.Evaluation.Prompts!.Value;
            // re-draw r: its own prompts, noise seeds and real reference, the same in every slot
            Redraws = Enumerable.Range(0, options.Redraws).Select(r => new ModelEvaluation(Teacher, recognizer,
                PromptSet.Toy(prompts, seed: PromptSet.ToySeed + r), evaluation with { Seed = evaluation.Seed + 100_000L * r },
                recipe.Evaluation.RealImages, Path.Combine(options.OutDir, $"redraw-{r}", $"slot-{slot}"), judge: judge,
                realSeed: ModelEvaluation.RealImageSeed + 10 * r)).ToList();
        }

        public void Evaluate(string model, SegmentStudent student, int steps)
        {
            foreach (var e in Redraws) e.Evaluate(model, student, [SamplerSpec.DdimTrailing()], [steps]);
        }

        /// <summary>The teacher on its best few-step sampler (DDIM trailing with CFG) and the untrained student.</summary>
        public void EvaluateControls(double guidance)
        {
            foreach (var e in Redraws)
            {
                e.Evaluate("teacher", [SamplerSpec.DdimTrailing(guidance)]);
                e.EvaluateUntrained([SamplerSpec.DdimTrailing()]);
            }
        }

        public void Dispose()
        {
            foreach (var e in Redraws) e.Dispose();
            Teacher.Dispose();
            recognizer.Dispose();
            judge.Dispose();
        }
    }

    /// <summary>FD per re-draw and the judge's pooled adherence of a model at a step count.</summary>
    sealed record Measured(IReadOnlyList<double> Fd, MetricEstimate Judge);

    static string Table(IReadOnlyList<Variant> variants, IReadOnlyList<Bench> benches, IReadOnlyDictionary<string, double> seconds,
        int redraws)
    {
        Measured Of(string model, int steps)
        {
            var rows = Enumerable.Range(0, redraws).Select(r => benches.SelectMany(b => b.Redraws[r].Rows)
                .Where(x => x.Model == model && x.Steps == steps).ToList()).ToList();
            var judged = rows.Select(rs => rs.Single(x => x.Metric == ModelEvaluator.JudgeAdherence).Value).ToList();
            int n = benches[0].Redraws[0].Prompts.Prompts.Count;
            return new(rows.Select(rs => rs.Single(x => x.Metric == "fd").Value).ToList(),
                WilsonInterval.Of(judged.Sum(v => (int)Math.Round(v * n)), n * redraws));
        }
        string Fd(Measured m) => RedrawInterval.Of(m.Fd).ToString();
        string Paired(Measured m, Measured pcm)
        {
            var d = RedrawInterval.Of(m.Fd.Zip(pcm.Fd, (a, b) => a - b).ToList());
            return d.Low > 0 || d.High < 0 ? $"**{d}**" : d.ToString();
        }

        var floor = RedrawInterval.Of(benches[0].Redraws.Select(e => e.Floor()).ToList());
        var first = variants[0];
        var text = new StringBuilder(string.Create(CultureInfo.InvariantCulture,
            $"Each FD: mean over {redraws} re-draws of {benches[0].Redraws[0].Prompts.Prompts.Count} held-out captions " +
            $"against {first.Recipe.Evaluation.RealImages} real renders, Student-t 95 % interval; Δ: paired difference to " +
            $"{first.Name} per re-draw (bold: the interval excludes 0). Judge adherence: Wilson 95 % over all re-draws. " +
            $"FD floor (two real sets of these sizes): {floor}.\n\n"));
        text.AppendLine("| variant | flipped | pairs per sample seen | fd@1 (k = 1) | Δ fd@1 | judge@1 | fd@4 (k = 4) | Δ fd@4 | " +
                        "judge@4 | training (s) |");
        text.AppendLine("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var (model, label) in new[] { ("teacher", "teacher, DDIM trailing, CFG 3"), (ModelEvaluation.Untrained, "untrained") })
        {
            var (one, four) = (Of(model, 1), Of(model, 4));
            text.AppendLine($"| {label} | | | {Fd(one)} | | {one.Judge} | {Fd(four)} | | {four.Judge} | |");
        }
        var pcm = MeasuredStages.ToDictionary(k => k, k => Of(Model(first.Name, k), k));
        foreach (var v in variants)
        {
            var (one, four) = (Of(Model(v.Name, 1), 1), Of(Model(v.Name, 4), 4));
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {v.Name} | {v.Flipped} | {PairsPerSampleSeen(v.Recipe):F2} | {Fd(one)} | {Paired(one, pcm[1])} | {one.Judge} | " +
                $"{Fd(four)} | {Paired(four, pcm[4])} | {four.Judge} | {seconds.GetValueOrDefault(v.Name):F0} |"));
        }
        return text.ToString();
    }
}
