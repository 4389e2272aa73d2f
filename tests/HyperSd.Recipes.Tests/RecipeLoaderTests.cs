namespace HyperSd.Recipes.Tests;

public class RecipeLoaderTests
{
    const string Source = "recipes/x.yaml";

    /// <summary>A small valid recipe; each test breaks one thing in it.</summary>
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

    static IReadOnlyList<string> Problems(string yaml)
    {
        var e = Assert.Throws<RecipeValidationException>(() => RecipeLoader.Parse(yaml, Source));
        var lines = e.Message.Split('\n').Skip(1).ToList();
        Assert.Equal(e.Problems.Select(p => $"{Source}: {p}"), lines);
        return lines;
    }

    [Fact]
    public void The_base_recipe_is_valid_and_takes_defaults_for_what_it_omits()
    {
        var recipe = RecipeLoader.Parse(Valid, Source);

        Assert.Equal(new[] { 4, 2, 1 }, recipe.Tscd.Segments);
        Assert.Equal(50, recipe.Trajectories.SolverSteps);
        Assert.Equal((64, 8.0), (recipe.Tscd.Lora!.Rank, recipe.Tscd.Lora.Alpha));
        Assert.Equal(0.001, recipe.Tscd.HuberC);
        Assert.Null(recipe.Dataset.Resolution);
    }

    [Fact]
    public void The_learning_rate_schedule_is_read_and_checked()
    {
        var tscd = RecipeLoader.Parse(Valid.Replace("  loss: huber", "  loss: huber\n  lr_scheduler: cosine\n  lr_warmup_steps: 20"), Source).Tscd;
        Assert.Equal((LrScheduler.Cosine, 20), (tscd.LrScheduler, tscd.LrWarmupSteps));
        Assert.Equal(LrScheduler.Constant, RecipeLoader.Parse(Valid, Source).Tscd.LrScheduler);
        Assert.Equal([$"{Source}: tscd.lr_scheduler: unknown value 'linear' (allowed: constant, cosine)"],
            Problems(Valid.Replace("  loss: huber", "  loss: huber\n  lr_scheduler: linear")));
        // the default weights give k = 4, 2, 1 an adversarial term: alternating, their stages update the student 500 times
        Assert.Equal([$"{Source}: tscd.lr_warmup_steps: must be in [0, student updates per stage = 500) " +
                      "(steps_per_stage / 2 with adversarial_schedule alternate) (got: 500)"],
            Problems(Valid.Replace("  loss: huber", "  loss: huber\n  lr_warmup_steps: 500")));
        Assert.Equal([$"{Source}: tscd.lr_warmup_steps: must be in [0, steps_per_stage = 1000) (got: 1000)"],
            Problems(Valid.Replace("  loss: huber", "  loss: huber\n  lr_warmup_steps: 1000\n  adversarial_schedule: joint")));
    }

    [Fact]
    public void The_adversarial_step_defaults_to_pcms_and_each_setting_is_read_and_checked()
    {
        var tscd = RecipeLoader.Parse(Valid, Source).Tscd;
        Assert.Equal((AdversarialSteps.Alternate, NoiseDraw.Independent, 4, 1e-3, (double?)1.0),
            (tscd.AdversarialSchedule, tscd.AdversarialNoise, tscd.DiscriminatorHeadsPerFeature, tscd.DiscriminatorWeightDecay,
                tscd.DiscriminatorMaxGradNorm));
        Assert.Equal(0, RecipeLoader.Parse(Valid, Source).Trajectories.EmptyPromptProbability);
        tscd = RecipeLoader.Parse(Valid.Replace("  loss: huber", """
              loss: huber
              adversarial_schedule: joint
              adversarial_noise: shared
              discriminator_heads_per_feature: 1
              discriminator_weight_decay: 0
              discriminator_max_grad_norm: null
            """), Source).Tscd;
        Assert.Equal((AdversarialSteps.Joint, NoiseDraw.Shared, 1, 0.0, (double?)null),
            (tscd.AdversarialSchedule, tscd.AdversarialNoise, tscd.DiscriminatorHeadsPerFeature, tscd.DiscriminatorWeightDecay,
                tscd.DiscriminatorMaxGradNorm));
        Assert.Equal([
            $"{Source}: tscd.adversarial_schedule: unknown value 'both' (allowed: alternate, joint)",
            $"{Source}: tscd.adversarial_noise: unknown value 'same' (allowed: independent, shared)",
            $"{Source}: tscd.discriminator_heads_per_feature: must be at least 1 (got: 0)",
            $"{Source}: tscd.discriminator_weight_decay: must be non-negative (got: -0.1)",
            $"{Source}: tscd.discriminator_max_grad_norm: must be positive (or null: no clipping) (got: 0)",
        ], Problems(Valid.Replace("  loss: huber", """
              loss: huber
              adversarial_schedule: both
              adversarial_noise: same
              discriminator_heads_per_feature: 0
              discriminator_weight_decay: -0.1
              discriminator_max_grad_norm: 0
            """)));
        Assert.Equal([$"{Source}: tscd.steps_per_stage: must be at least 2 with adversarial_schedule alternate (odd steps update " +
                      "the student) (got: 1)"],
            Problems(Valid.Replace("  loss: huber", "  loss: huber\n  steps_per_stage: 1")));
    }

    [Fact]
    public void A_generation_section_is_optional_and_checked()
    {
        Assert.Null(RecipeLoader.Parse(Valid, Source).Generation);
        var recipe = RecipeLoader.Parse(Valid + "\ngeneration:\n  prompts: [a red circle]\n  sampler: tcd\n  tcd_eta: 0.3\n", Source);
        Assert.Equal(["a red circle"], recipe.Generation!.Prompts);
        Assert.Equal(4, recipe.Generation.Steps);
        Assert.Equal((EvaluationSampler.Tcd, 0.3), (recipe.Generation.Sampler, recipe.Generation.TcdEta));
        Assert.Equal([
            $"{Source}: generation.prompts: give exactly one of prompts and prompts_file (got: neither)",
            $"{Source}: generation.steps: must be at least 1 (got: 0)",
        ], Problems(Valid + "\ngeneration:\n  steps: 0\n"));
        Assert.Equal([$"{Source}: generation.prompts: must list at least one non-blank prompt (got: [' '])"],
            Problems(Valid + "\ngeneration:\n  prompts: [' ']\n"));
    }

    [Fact]
    public void A_merge_section_is_optional_takes_its_defaults_and_is_checked()
    {
        Assert.Null(RecipeLoader.Parse(Valid, Source).Merge);
        var merge = RecipeLoader.Parse(Valid + "\nmerge: {}\n", Source).Merge!;
        Assert.Equal((true, null, null, null, false, false), (merge.Enabled, merge.Weights, merge.Rank, merge.ConvRank, merge.ClampRank, merge.Fuse));
        Assert.Equal([LoraFormat.Kohya, LoraFormat.Peft], merge.Formats);
        merge = RecipeLoader.Parse(Valid + "\nmerge: {weights: {tscd-k1: 0.5, tscd-k2: 0.5}, rank: 8, formats: [peft], fuse: true}\n", Source).Merge!;
        Assert.Equal((0.5, 8, LoraFormat.Peft, true), (merge.Weights!["tscd-k1"], merge.Rank, merge.Formats.Single(), merge.Fuse));
        Assert.Equal([
            $"{Source}: merge.rank: must be at least 1 (or absent for tscd.lora.rank) (got: 0)",
            $"{Source}: merge.conv_rank: must be at least 1 (or absent for rank) (got: -1)",
            $"{Source}: merge.formats: at least one format is required (allowed: kohya, peft) (got: [])",
            $"{Source}: merge.weights: at least one weight must be non-zero (the merged LoRA would be empty) (got: all 0)",
        ], Problems(Valid + "\nmerge: {rank: 0, conv_rank: -1, formats: [], weights: {tscd-k1: 0}}\n"));
        Assert.Equal([$"{Source}: merge.fuse: expected true or false (got: 'maybe')"], Problems(Valid + "\nmerge: {fuse: maybe}\n"));
        Assert.Equal([$"{Source}: merge.formats[1]: unknown value 'ckpt' (allowed: kohya, peft)"],
            Problems(Valid + "\nmerge: {formats: [kohya, ckpt]}\n"));
        Assert.Equal([$"{Source}: merge: the merge needs LoRA stages (tscd.lora); a fully fine-tuned UNet has no LoRA to merge (got: tscd.lora empty)"],
            Problems(Valid.Replace("  loss: huber", "  loss: huber\n  lora:") + "\nmerge: {}\n"));
        // switched off, nothing in it is checked
        Assert.False(RecipeLoader.Parse(Valid + "\nmerge: {enabled: false, rank: 0}\n", Source).Merge!.Enabled);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-4")]
    public void A_lora_rank_below_1_is_refused_naming_the_field(string rank)
    {
        Assert.Equal([$"{Source}: tscd.lora.rank: must be at least 1 (got: {rank})"],
            Problems(Valid.Replace("  loss: huber", $"  loss: huber\n  lora: {{rank: {rank}, alpha: 8}}")));
    }

    [Fact]
    public void An_unknown_key_names_it_and_the_keys_its_section_allows()
    {
        var problems = Problems(Valid.Replace("  loss: huber", "  loss: huber\n  lr: 0.1"));

        var problem = Assert.Single(problems);
        Assert.StartsWith($"{Source}: tscd.lr: unknown key (allowed: segments, steps_per_stage, batch_size, learning_rate,", problem);
        Assert.Contains("checkpoint_every)", problem);
    }

    [Fact]
    public void An_unknown_top_level_section_is_named()
    {
        var problem = Assert.Single(Problems(Valid + "\nschedule: nightly\n"));
        Assert.Equal($"{Source}: schedule: unknown key (allowed: name, seed, model, dataset, trajectories, tscd, evaluation, merge, refl, dmd, rewards, generation)", problem);
    }

    [Fact]
    public void A_bad_enum_value_lists_the_allowed_ones()
    {
        Assert.Equal([$"{Source}: tscd.loss: unknown value 'l1' (allowed: huber, mse)"], Problems(Valid.Replace("loss: huber", "loss: l1")));
        Assert.Equal([$"{Source}: evaluation.samplers[1]: unknown value 'euler' (allowed: ddim-trailing, tcd)"],
            Problems(Valid.Replace("  prompts: 16", "  prompts: 16\n  samplers: [tcd, euler]")));
    }

    [Fact]
    public void A_value_of_the_wrong_type_is_named()
    {
        Assert.Equal([$"{Source}: trajectories.count: expected an integer (got: 'many')"], Problems(Valid.Replace("count: 128", "count: many")));
        Assert.Equal([$"{Source}: tscd.segments: expected a list (got: '4')"], Problems(Valid.Replace("segments: [4, 2, 1]", "segments: 4")));
    }

    [Fact]
    public void A_real_model_needs_a_path()
    {
        var yaml = Valid.Replace("  source: toy\ndataset:\n  source: toy\n  count: 64", "  source: diffusers\ndataset:\n  source: folder\n  path: /data/pairs")
            .Replace("  prompts: 16", "  prompts_file: /data/prompts.txt");

        Assert.Equal([$"{Source}: model.path: required with source diffusers (got: nothing)"], Problems(yaml));
        Assert.NotNull(RecipeLoader.Parse(yaml.Replace("source: diffusers", "source: diffusers\n  path: /data/sd15"), Source));
    }

    [Fact]
    public void Sdxl_needs_a_model_folder_the_built_in_toy_teacher_and_single_files_are_sd15()
    {
        var sdxlToy = Valid.Replace("  source: toy\ndataset:", "  source: toy\n  architecture: sdxl\ndataset:");
        Assert.Equal([$"{Source}: model.architecture: the built-in toy teacher has the sd15 topology; an sdxl toy model needs model.path (allowed without it: sd15) (got: sdxl)"],
            Problems(sdxlToy));
        Assert.NotNull(RecipeLoader.Parse(sdxlToy.Replace("architecture: sdxl", "architecture: sdxl\n  path: /models/toy-sdxl"), Source));
        var singleFile = Valid.Replace("  source: toy\ndataset:\n  source: toy\n  count: 64",
                "  source: single-file\n  path: /m/sdxl.safetensors\n  tokenizer: /m/tok\n  architecture: sdxl\ndataset:\n  source: folder\n  path: /data/pairs")
            .Replace("  prompts: 16", "  prompts_file: /data/prompts.txt");
        Assert.Equal([$"{Source}: model.architecture: single-file checkpoints load the sd15 layout; give SDXL as a diffusers folder (allowed with single-file: sd15) (got: sdxl)"],
            Problems(singleFile));
    }

    [Fact]
    public void Segments_must_strictly_decrease()
    {
        Assert.Equal([$"{Source}: tscd.segments: must be strictly decreasing (got: [4, 4, 1])"],
            Problems(Valid.Replace("segments: [4, 2, 1]", "segments: [4, 4, 1]")));
        Assert.Equal([$"{Source}: tscd.segments: must be strictly decreasing (got: [1, 2, 4])"],
            Problems(Valid.Replace("segments: [4, 2, 1]", "segments: [1, 2, 4]")));
    }

    [Fact]
    public void Segments_must_fit_the_solver_grid_and_have_loss_weights()
    {
        var problems = Problems(Valid.Replace("segments: [4, 2, 1]", "segments: [64, 3]"));

        Assert.Equal([
            $"{Source}: tscd.segments: each k must be in [1, solver_steps = 50] (got: [64, 3])",
            $"{Source}: tscd.weights: no loss weights for stage k = 64 (given for k = 8, 4, 2, 1)",
            $"{Source}: tscd.weights: no loss weights for stage k = 3 (given for k = 8, 4, 2, 1)",
        ], problems);
    }

    [Fact]
    public void A_negative_learning_rate_is_refused()
    {
        Assert.Equal([$"{Source}: tscd.learning_rate: must be positive (got: -0.001)"], Problems(Valid.Replace("learning_rate: 1.0e-3", "learning_rate: -1.0e-3")));
    }

    [Fact]
    public void Every_problem_is_reported_at_once()
    {
        var yaml = Valid.Replace("loss: huber", "loss: l1").Replace("learning_rate: 1.0e-3", "learning_rate: -1")
            .Replace("count: 128", "count: 128\n  guidance_max: 1\n  colour: red") + "\n  tcd_eta: 2\n";

        Assert.Equal([
            $"{Source}: trajectories.colour: unknown key (allowed: count, solver_steps, guidance_min, guidance_max, batch_size, empty_prompt_probability)",
            $"{Source}: tscd.loss: unknown value 'l1' (allowed: huber, mse)",
            $"{Source}: trajectories.guidance_max: must be at least guidance_min (4) (got: 1)",
            $"{Source}: tscd.learning_rate: must be positive (got: -1)",
            $"{Source}: evaluation.tcd_eta: must be in [0, 1] (got: 2)",
        ], Problems(yaml));
    }

    [Fact]
    public void A_yaml_syntax_error_names_the_line()
    {
        var problem = Assert.Single(Problems(Valid.Replace("  loss: huber", "  loss: huber\n loose: 1")));
        Assert.StartsWith($"{Source}: line 12, column 2: YAML syntax error:", problem);

        // YamlDotNet's scanner fails on this one without a position; the loader still names the line
        problem = Assert.Single(Problems(Valid.Replace("segments: [4, 2, 1]", "segments: [4, 2, 1")));
        Assert.StartsWith($"{Source}: line 11, column 3: YAML syntax error: the parser stopped here (an unclosed [ or {{ above?)", problem);
    }

    [Fact]
    public void Full_fine_tuning_is_lora_null()
    {
        var recipe = RecipeLoader.Parse(Valid.Replace("  loss: huber", "  loss: huber\n  lora: null"), Source);

        Assert.Null(recipe.Tscd.Lora);
        Assert.Null(RecipeLoader.Parse(recipe.ToYaml(), Source).Tscd.Lora);
    }

    [Fact]
    public void The_hash_ignores_comments_order_and_spelled_out_defaults_but_not_values()
    {
        var reordered = """
            # the same run
            evaluation: {prompts: 16, tcd_eta: 1.0}
            tscd:
              learning_rate: 0.001   # same number
              segments: [4, 2, 1]
            trajectories: {count: 128, solver_steps: 50}
            dataset: {count: 64, source: toy}
            name: small
            """;
        var hash = RecipeLoader.Parse(Valid, Source).Sha256();

        Assert.Matches("^[0-9a-f]{64}$", hash);
        Assert.Equal(hash, RecipeLoader.Parse(reordered, Source).Sha256());
        Assert.NotEqual(hash, RecipeLoader.Parse(reordered.Replace("count: 128", "count: 129"), Source).Sha256());
    }
}
