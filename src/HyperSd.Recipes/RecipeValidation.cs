using System.Globalization;
using System.Text.RegularExpressions;

namespace HyperSd.Recipes;

public sealed partial record Recipe
{
    /// <summary>Throws <see cref="RecipeValidationException"/> listing every problem, if there is any.</summary>
    public void Validate(string sourceName = "recipe")
    {
        var problems = Problems();
        if (problems.Count > 0) throw new RecipeValidationException(sourceName, problems);
    }

    /// <summary>Every value that makes no sense alone or next to another; empty when the recipe can run.</summary>
    public IReadOnlyList<RecipeProblem> Problems()
    {
        var problems = new List<RecipeProblem>();
        void Check(bool ok, string field, string problem, object? got)
        {
            if (!ok) problems.Add(new(field, $"{problem} (got: {Got(got)})"));
        }

        Check(!string.IsNullOrWhiteSpace(Name), "name", "required", Text(Name));
        Check(Seed >= 0, "seed", "must be non-negative", Seed);

        var toy = Model.Source == ModelSource.Toy;
        if (!toy)
            Check(!string.IsNullOrWhiteSpace(Model.Path), "model.path", $"required with source {Value(Model.Source)}", Text(Model.Path));
        Check(!toy || Model.Architecture == ModelArchitecture.Sd15 || Model.Path is not null, "model.architecture",
            "the built-in toy teacher has the sd15 topology; an sdxl toy model needs model.path (allowed without it: sd15)",
            Value(Model.Architecture));
        Check(Model.Source != ModelSource.SingleFile || Model.Architecture == ModelArchitecture.Sd15, "model.architecture",
            "single-file checkpoints load the sd15 layout; give SDXL as a diffusers folder (allowed with single-file: sd15)",
            Value(Model.Architecture));
        if (Model.Source == ModelSource.SingleFile)
            Check(!string.IsNullOrWhiteSpace(Model.Tokenizer), "model.tokenizer",
                "required with source single-file (the checkpoint has no tokenizer)", Text(Model.Tokenizer));
        else
            Check(Model.Tokenizer is null, "model.tokenizer", "only used with source single-file", Text(Model.Tokenizer));
        Check(DeviceName().IsMatch(Model.Device), "model.device", "unknown device (allowed: cpu, cuda, cuda:N)", Text(Model.Device));

        var toyData = Dataset.Source == DatasetSource.Toy;
        Check(toyData == toy, "dataset.source", toy ? "the toy teacher trains on the toy dataset (allowed: toy)"
            : "the toy dataset needs the toy teacher (allowed: folder, jsonl, csv)", Value(Dataset.Source));
        if (toyData)
        {
            Check(Dataset.Path is null, "dataset.path", "the toy dataset is generated, it has no path", Text(Dataset.Path));
            Check(Dataset.Count >= 1, "dataset.count", "the number of toy scenes is required and must be at least 1", Dataset.Count);
            // the toy world's fixed image size is checked where the recipe is mapped onto it (HyperSd.Services)
        }
        else
        {
            Check(!string.IsNullOrWhiteSpace(Dataset.Path), "dataset.path",
                $"required with source {Value(Dataset.Source)}", Text(Dataset.Path));
            Check(Dataset.Count is null or >= 1, "dataset.count", "must be at least 1 (or absent for all pairs)", Dataset.Count);
            // the VAE downsamples by 8
            Check(Dataset.Resolution is null || Dataset.Resolution >= 8 && Dataset.Resolution % 8 == 0, "dataset.resolution",
                "must be a positive multiple of 8", Dataset.Resolution);
        }
        Check(Dataset.Seed >= 0, "dataset.seed", "must be non-negative", Dataset.Seed);
        Check(Dataset.ShardSize >= 1, "dataset.shard_size", "must be at least 1", Dataset.ShardSize);

        var t = Trajectories;
        Check(t.Count >= 1, "trajectories.count", "required, at least 1", t.Count);
        Check(t.SolverSteps is >= 1 and <= TrainTimesteps, "trajectories.solver_steps", $"must be in [1, {TrainTimesteps}]", t.SolverSteps);
        Check(t.GuidanceMin >= 0, "trajectories.guidance_min", "must be non-negative", t.GuidanceMin);
        Check(t.GuidanceMax >= t.GuidanceMin, "trajectories.guidance_max",
            $"must be at least guidance_min ({Format(t.GuidanceMin)})", t.GuidanceMax);
        Check(t.BatchSize >= 1, "trajectories.batch_size", "must be at least 1", t.BatchSize);
        Check(t.EmptyPromptProbability is >= 0 and <= 1, "trajectories.empty_prompt_probability",
            "must be in [0, 1]", t.EmptyPromptProbability);

        var s = Tscd;
        Check(s.Segments.Count >= 1, "tscd.segments", "at least one stage is required", Format(s.Segments));
        Check(s.Segments.Zip(s.Segments.Skip(1)).All(p => p.First > p.Second), "tscd.segments",
            "must be strictly decreasing", Format(s.Segments));
        Check(s.Segments.All(k => k >= 1 && k <= t.SolverSteps), "tscd.segments",
            $"each k must be in [1, solver_steps = {t.SolverSteps}]", Format(s.Segments));
        Check(s.StepsPerStage >= 1, "tscd.steps_per_stage", "must be at least 1", s.StepsPerStage);
        Check(s.BatchSize >= 1, "tscd.batch_size", "must be at least 1", s.BatchSize);
        Check(s.LearningRate > 0, "tscd.learning_rate", "must be positive", s.LearningRate);
        // the fewest student updates of any stage: half the steps where steps alternate
        int updates = s.Segments.Select(s.StudentUpdates).DefaultIfEmpty(s.StepsPerStage).Min();
        Check(updates >= 1 || s.StepsPerStage < 1, "tscd.steps_per_stage",
            "must be at least 2 with adversarial_schedule alternate (odd steps update the student)", s.StepsPerStage);
        Check(s.LrWarmupSteps >= 0 && s.LrWarmupSteps < Math.Max(1, updates), "tscd.lr_warmup_steps", updates == s.StepsPerStage
            ? $"must be in [0, steps_per_stage = {s.StepsPerStage})"
            : $"must be in [0, student updates per stage = {updates}) (steps_per_stage / 2 with adversarial_schedule alternate)",
            s.LrWarmupSteps);
        Check(s.WeightDecay >= 0, "tscd.weight_decay", "must be non-negative", s.WeightDecay);
        Check(s.MaxGradNorm > 0, "tscd.max_grad_norm", "must be positive", s.MaxGradNorm);
        Check(s.EmaDecay is >= 0 and < 1, "tscd.ema_decay", "must be in [0, 1)", s.EmaDecay);
        Check(s.PerturbationScale >= 0, "tscd.perturbation_scale", "must be non-negative", s.PerturbationScale);
        Check(s.HuberC > 0, "tscd.huber_c", "must be positive", s.HuberC);
        if (s.Lora is { } lora)
        {
            Check(lora.Rank >= 1, "tscd.lora.rank", "must be at least 1", lora.Rank);
            Check(lora.Alpha > 0, "tscd.lora.alpha", "must be positive", lora.Alpha);
            Check(lora.TargetModules is null || lora.TargetModules.Count > 0, "tscd.lora.target_modules",
                "must list at least one pattern (or be absent for the LCM list)", "[]");
        }
        foreach (int k in s.Segments.Where(k => !s.Weights.ContainsKey(k)))
            problems.Add(new("tscd.weights", $"no loss weights for stage k = {k} (given for k = {string.Join(", ", s.Weights.Keys)})"));
        foreach (var (k, w) in s.Weights)
        {
            Check(w.Mse >= 0, $"tscd.weights.{k}.mse", "must be non-negative", w.Mse);
            Check(w.Adversarial >= 0, $"tscd.weights.{k}.adversarial", "must be non-negative", w.Adversarial);
            Check(w.Mse + w.Adversarial > 0, $"tscd.weights.{k}", "at least one weight must be positive",
                $"mse {Format(w.Mse)}, adversarial {Format(w.Adversarial)}");
        }
        Check(s.DiscriminatorLearningRate > 0, "tscd.discriminator_learning_rate", "must be positive", s.DiscriminatorLearningRate);
        Check(s.DiscriminatorChannels is null or >= 1, "tscd.discriminator_channels",
            "must be at least 1 (or absent)", s.DiscriminatorChannels);
        Check(s.DiscriminatorHeadsPerFeature >= 1, "tscd.discriminator_heads_per_feature", "must be at least 1",
            s.DiscriminatorHeadsPerFeature);
        Check(s.DiscriminatorWeightDecay >= 0, "tscd.discriminator_weight_decay", "must be non-negative", s.DiscriminatorWeightDecay);
        Check(s.DiscriminatorMaxGradNorm is null or > 0, "tscd.discriminator_max_grad_norm", "must be positive (or null: no clipping)",
            s.DiscriminatorMaxGradNorm);
        Check(s.CheckpointEvery >= 1, "tscd.checkpoint_every", "must be at least 1", s.CheckpointEvery);

        var e = Evaluation;
        Check(e.Steps.Count >= 1 && e.Steps.All(n => n >= 1), "evaluation.steps", "must list step counts of at least 1", Format(e.Steps));
        Check(e.Steps.Distinct().Count() == e.Steps.Count, "evaluation.steps", "must not repeat a step count", Format(e.Steps));
        Check(e.Samplers.Count >= 1, "evaluation.samplers", "at least one sampler is required (allowed: ddim-trailing, tcd)", "[]");
        Check(e.Samplers.Distinct().Count() == e.Samplers.Count, "evaluation.samplers",
            "must not repeat a sampler", string.Join(", ", e.Samplers.Select(Value)));
        Check(e.TcdEta is >= 0 and <= 1, "evaluation.tcd_eta", "must be in [0, 1]", e.TcdEta);
        Check((e.Prompts is null) != (e.PromptsFile is null), "evaluation.prompts", "give exactly one of prompts (toy) and prompts_file",
            e.Prompts is null && e.PromptsFile is null ? "neither" : "both");
        if (e.Prompts is { } count)
        {
            Check(toyData, "evaluation.prompts", "a prompt count needs the toy dataset's held-out prompts (use prompts_file)", count);
            Check(count >= 1, "evaluation.prompts", "must be at least 1", count);
        }
        Check(e.PromptsFile is null || e.PromptsFile.Trim().Length > 0, "evaluation.prompts_file", "must name a file", Text(e.PromptsFile));
        Check(e.TeacherSteps >= 1, "evaluation.teacher_steps", "must be at least 1", e.TeacherSteps);
        Check(e.TeacherGuidance >= 0, "evaluation.teacher_guidance", "must be non-negative", e.TeacherGuidance);
        // a Fréchet distance needs a covariance
        Check(e.RealImages >= 2, "evaluation.real_images", "must be at least 2", e.RealImages);
        Check(e.Seed >= 0, "evaluation.seed", "must be non-negative", e.Seed);
        Check(e.BatchSize >= 1, "evaluation.batch_size", "must be at least 1", e.BatchSize);
        Check(e.GridPrompts >= 0, "evaluation.grid_prompts", "must be non-negative", e.GridPrompts);
        if (e.Rewards is { } scored)
        {
            Check(scored.Distinct().Count() == scored.Count, "evaluation.rewards", "must not repeat a reward",
                $"[{string.Join(", ", scored)}]");
            CheckRewards("evaluation.rewards", scored.Distinct().ToDictionary(n => n, _ => 1.0));
        }
        if (TrainedRewardsUsed().Count > 0)
        {
            var rt = Rewards?.ToyTraining ?? new();
            Check(rt.PreferenceSteps >= 1, "rewards.toy_training.preference_steps", "must be at least 1", rt.PreferenceSteps);
            Check(rt.AestheticSteps >= 1, "rewards.toy_training.aesthetic_steps", "must be at least 1", rt.AestheticSteps);
            Check(rt.BatchSize >= 1, "rewards.toy_training.batch_size", "must be at least 1", rt.BatchSize);
            Check(rt.Seed >= 0, "rewards.toy_training.seed", "must be non-negative", rt.Seed);
        }

        if (Merge is { Enabled: true } m)
        {
            Check(s.Lora is not null, "merge", "the merge needs LoRA stages (tscd.lora); a fully fine-tuned UNet has no LoRA to merge",
                "tscd.lora empty");
            Check(m.Rank is null or >= 1, "merge.rank", "must be at least 1 (or absent for tscd.lora.rank)", m.Rank);
            Check(m.ConvRank is null or >= 1, "merge.conv_rank", "must be at least 1 (or absent for rank)", m.ConvRank);
            Check(m.Formats.Count >= 1, "merge.formats", "at least one format is required (allowed: kohya, peft)", "[]");
            Check(m.Formats.Distinct().Count() == m.Formats.Count, "merge.formats", "must not repeat a format",
                string.Join(", ", m.Formats.Select(Value)));
            foreach (var (stage, w) in m.Weights ?? new Dictionary<string, double>())
                Check(double.IsFinite(w), $"merge.weights.{stage}", "must be a finite number", w);
            Check(m.Weights is null || m.Weights.Values.Any(w => w != 0), "merge.weights",
                "at least one weight must be non-zero (the merged LoRA would be empty)", m.Weights is null ? null : "all 0");
            // that the weights name the run's LoRA stages is checked where the stages are planned (HyperSd.Services)
        }

        if (Refl is { Enabled: true } r)
        {
            Check(s.Lora is not null, "refl", "feedback learning trains the TSCD students' LoRAs (tscd.lora)", "tscd.lora empty");
            Check(r.Students.Count >= 1, "refl.students", "at least one TSCD stage's k is required", Format(r.Students));
            Check(r.Students.Distinct().Count() == r.Students.Count, "refl.students", "must not repeat a k", Format(r.Students));
            foreach (int k in r.Students.Where(k => !s.Segments.Contains(k)))
                problems.Add(new("refl.students", $"k = {k} is not a TSCD stage (tscd.segments: {Format(s.Segments)})"));
            Check(r.StopFrom is >= 0 and < 1, "refl.stop_from", "must be in [0, 1)", r.StopFrom);
            Check(r.Steps >= 1, "refl.steps", "must be at least 1", r.Steps);
            Check(r.BatchSize >= 1, "refl.batch_size", "must be at least 1", r.BatchSize);
            Check(r.LearningRate > 0, "refl.learning_rate", "must be positive", r.LearningRate);
            Check(r.WeightDecay >= 0, "refl.weight_decay", "must be non-negative", r.WeightDecay);
            Check(r.MaxGradNorm > 0, "refl.max_grad_norm", "must be positive", r.MaxGradNorm);
            Check(double.IsFinite(r.Alpha), "refl.alpha", "must be a finite number", r.Alpha);
            Check(r.RewardScale > 0, "refl.reward_scale", "must be positive", r.RewardScale);
            Check(r.AnchorWeight >= 0, "refl.anchor_weight", "must be non-negative", r.AnchorWeight);
            Check(r.CheckpointEvery >= 1, "refl.checkpoint_every", "must be at least 1", r.CheckpointEvery);
            CheckRewards("refl.rewards", r.RewardWeights(toy));
        }

        if (Dmd is { Enabled: true } d)
        {
            Check(s.Lora is not null, "dmd", "DMD trains the 1-step student's LoRA (tscd.lora)", "tscd.lora empty");
            Check(s.Segments.Contains(1), "dmd", "DMD enhances the 1-step student, and no stage makes one: tscd.segments needs 1",
                Format(s.Segments));
            Check(d.Steps >= 1, "dmd.steps", "must be at least 1", d.Steps);
            Check(d.BatchSize >= 1, "dmd.batch_size", "must be at least 1", d.BatchSize);
            Check(d.GeneratorLearningRate > 0, "dmd.generator_learning_rate", "must be positive", d.GeneratorLearningRate);
            Check(d.FakeScoreLearningRate > 0, "dmd.fake_score_learning_rate", "must be positive", d.FakeScoreLearningRate);
            Check(d.WeightDecay >= 0, "dmd.weight_decay", "must be non-negative", d.WeightDecay);
            Check(d.MaxGradNorm > 0, "dmd.max_grad_norm", "must be positive", d.MaxGradNorm);
            Check(d.WarmupSteps >= 0 && d.WarmupSteps < d.Steps, "dmd.warmup_steps", $"must be in [0, steps) ([0, {d.Steps}))",
                d.WarmupSteps);
            Check(d.GeneratorUpdateEvery >= 1, "dmd.generator_update_every", "must be at least 1", d.GeneratorUpdateEvery);
            Check(d.MinTimestep is >= 0 and < 1, "dmd.min_timestep", "must be a fraction in [0, 1)", d.MinTimestep);
            Check(d.MaxTimestep > d.MinTimestep && d.MaxTimestep <= 1, "dmd.max_timestep",
                $"must be above min_timestep ({Format(d.MinTimestep)}) and at most 1", d.MaxTimestep);
            Check(d.RealGuidance >= 1, "dmd.real_guidance", "must be at least 1 (1 = no guidance)", d.RealGuidance);
            Check(d.DistributionMatchingWeight >= 0, "dmd.distribution_matching_weight", "must be non-negative",
                d.DistributionMatchingWeight);
            Check(d.RegressionWeight >= 0, "dmd.regression_weight", "must be non-negative", d.RegressionWeight);
            if (d.RegressionWeight > 0)
            {
                Check(d.RegressionPairs >= 1, "dmd.regression_pairs", "must be at least 1 with a regression weight", d.RegressionPairs);
                Check(d.RegressionTeacherSteps >= 1, "dmd.regression_teacher_steps", "must be at least 1", d.RegressionTeacherSteps);
            }
            Check(d.DistributionMatchingWeight > 0 || d.RegressionWeight > 0 || d.GanGeneratorWeight > 0 || d.Rewards is not null,
                "dmd.distribution_matching_weight", "distribution matching, regression, the GAN term and the rewards are all off: " +
                "the generator would learn nothing", "0");
            if (d.Rewards is { } rewards)
            {
                CheckRewards("dmd.rewards", rewards);
                Check(d.RewardWeight > 0, "dmd.reward_weight", "must be positive when dmd.rewards is given", d.RewardWeight);
                Check(double.IsFinite(d.RewardAlpha), "dmd.reward_alpha", "must be a finite number", d.RewardAlpha);
            }
            Check(d.GanGeneratorWeight >= 0, "dmd.gan_generator_weight", "must be non-negative", d.GanGeneratorWeight);
            Check(d.GanDiscriminatorWeight > 0, "dmd.gan_discriminator_weight", "must be positive", d.GanDiscriminatorWeight);
            Check(d.FakeScoreRank >= 1, "dmd.fake_score_rank", "must be at least 1", d.FakeScoreRank);
            Check(d.FakeScoreAlpha > 0, "dmd.fake_score_alpha", "must be positive", d.FakeScoreAlpha);
            Check(d.CheckpointEvery >= 1, "dmd.checkpoint_every", "must be at least 1", d.CheckpointEvery);
        }

        if (Generation is { } g)
        {
            Check((g.Prompts is null) != (g.PromptsFile is null), "generation.prompts", "give exactly one of prompts and prompts_file",
                g.Prompts is null && g.PromptsFile is null ? "neither" : "both");
            Check(g.Prompts is null || (g.Prompts.Count >= 1 && g.Prompts.All(p => p.Trim().Length > 0)), "generation.prompts",
                "must list at least one non-blank prompt", g.Prompts is null ? null : $"[{string.Join(", ", g.Prompts.Select(Text))}]");
            Check(g.PromptsFile is null || g.PromptsFile.Trim().Length > 0, "generation.prompts_file",
                "must name a file", Text(g.PromptsFile));
            Check(g.ImagesPerPrompt >= 1, "generation.images_per_prompt", "must be at least 1", g.ImagesPerPrompt);
            Check(g.Steps >= 1, "generation.steps", "must be at least 1", g.Steps);
            Check(g.TcdEta is >= 0 and <= 1, "generation.tcd_eta", "must be in [0, 1]", g.TcdEta);
            Check(g.Seed >= 0, "generation.seed", "must be non-negative", g.Seed);
            Check(g.BatchSize >= 1, "generation.batch_size", "must be at least 1", g.BatchSize);
        }
        // the weights of a reward section: known names for the model's world, non-negative, one positive, the files they need
        void CheckRewards(string field, IReadOnlyDictionary<string, double> rewards)
        {
            var known = toy ? [.. ToyRewards, .. TrainedToyRewards] : RealRewards;
            foreach (var (name, w) in rewards)
            {
                Check(known.Contains(name), $"{field}.{name}", $"unknown reward for a {(toy ? "toy" : "real-scale")} model " +
                      $"(allowed: {string.Join(", ", known)})", Format(w));
                Check(double.IsFinite(w) && w >= 0, $"{field}.{name}", "must be a finite non-negative weight", w);
            }
            Check(rewards.Values.Any(w => w > 0), field, "the reward weights are all zero (or none given): at least one " +
                  "must be positive", rewards.Count == 0 ? "none" : "all 0");
            bool Uses(string name) => rewards.TryGetValue(name, out var w) && w > 0;
            if (Uses("laion-aesthetic"))
            {
                Check(Rewards?.Clip is not null, "rewards.clip", "required by the laion-aesthetic reward", null);
                Check(Rewards?.AestheticPredictor is not null, "rewards.aesthetic_predictor", "required by the laion-aesthetic reward",
                    null);
            }
            if (Uses("pickscore"))
                Check(Rewards?.Pickscore is not null, "rewards.pickscore", "required by the pickscore reward", null);
        }

        return problems;
    }

    /// <summary>The rewards feedback learning knows, by the model's world.</summary>
    public static readonly IReadOnlyList<string> ToyRewards = ["toy-structure", "toy-structure-logp"],
        RealRewards = ["laion-aesthetic", "pickscore"];

    /// <summary>The toy rewards a run learns first (its train-rewards stage); a recipe may name these as well.</summary>
    public static readonly IReadOnlyList<string> TrainedToyRewards = ["toy-preference", "toy-aesthetic"];

    /// <summary>The learnt toy rewards that some section of the recipe uses (with a positive weight): the ones to train.</summary>
    public IReadOnlyList<string> TrainedRewardsUsed()
    {
        bool toy = Model.Source == ModelSource.Toy;
        var used = new[] { Refl is { Enabled: true } r ? r.RewardWeights(toy) : null, Dmd is { Enabled: true } d ? d.Rewards : null }
            .SelectMany(w => w?.Where(kv => kv.Value > 0).Select(kv => kv.Key) ?? [])
            .Concat(Evaluation.Rewards ?? []);
        return toy ? TrainedToyRewards.Where(used.Contains).ToList() : [];
    }

    /// <summary>SD's training schedule length, which the solver grid divides.</summary>
    const int TrainTimesteps = 1000;

    static string Got(object? value) => value switch
    {
        null => "nothing",
        double d => Format(d),
        _ => Convert.ToString(value, CultureInfo.InvariantCulture)!,
    };

    /// <summary>User text, quoted so that blanks show.</summary>
    static string? Text(string? value) => value is null ? null : $"'{value}'";

    static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture);
    static string Format(IReadOnlyList<int> values) => $"[{string.Join(", ", values)}]";
    static string Value<T>(T value) where T : struct, Enum => RecipeSchema.EnumValues.Apply(value.ToString());

    [GeneratedRegex(@"^(cpu|cuda(:\d+)?)$")]
    private static partial Regex DeviceName();
}
