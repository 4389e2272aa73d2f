using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Distillation.DistributionMatching;
using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Tests.FeedbackLearning;
using HyperSd.Distillation.Tests.Trajectories;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.DistributionMatching;

public sealed class DmdTrainerTests : IDisposable
{
    readonly TinyTeacher tiny = new();
    readonly string dir = Directory.CreateTempSubdirectory("dmd-").FullName;

    public void Dispose()
    {
        tiny.Dispose();
        Directory.Delete(dir, true);
    }

    static readonly DmdConfig Tiny = new()
    {
        Steps = 6, BatchSize = 4, Seed = 5, GeneratorLearningRate = 1e-2, FakeScoreLearningRate = 1e-2, WarmupSteps = 2,
        GeneratorUpdateEvery = 2, RegressionPairs = 6, RegressionTeacherSteps = 2, CheckpointEvery = 2, FakeScoreRank = 4,
        FakeScoreAlpha = 4,
    };

    /// <summary>Every generator loss on: distribution matching, regression, reward and the GAN head.</summary>
    static readonly DmdConfig Everything = Tiny with { RewardWeight = 0.5, RewardAlpha = 1, GanGeneratorWeight = 0.1 };

    SegmentStudent NewStudent(long seed = 9, TinyTeacher? teacher = null)
    {
        using var g = new Generator((ulong)seed, CPU);
        return SegmentStudent.WithLora((teacher ?? tiny).Unet, new LoraConfig(4, 4), g);
    }

    static WeightedReward Rewards => new([(new ReflTrainerTests.Redness(), 1.0)]);

    DmdResult Train(DmdConfig config, SegmentStudent student, string name, CancellationToken token = default,
        Action<DmdProgress>? progress = null, WeightedReward? rewards = null, TinyTeacher? teacher = null)
    {
        var t = teacher ?? tiny;
        return DmdTrainer.Train(config, t.Unet, new ReflTrainerTests.ChannelDecoder(), t.Conditioner, t.Scheduler, t.Dataset,
            rewards ?? (config.RewardWeight > 0 ? Rewards : null), student, Path.Combine(dir, name), progress, token);
    }

    [Fact]
    public void The_fake_score_steps_on_every_iteration_and_the_generator_on_every_nth()
    {
        using var student = NewStudent();
        var result = Train(Tiny with { Steps = 7, GeneratorUpdateEvery = 3, CheckpointEvery = 100 }, student, "scales");
        var h = result.Metrics.History;
        Assert.Equal([true, false, false, true, false, false, true], h.Select(x => x.GeneratorUpdated));
        Assert.All(h.Where(x => !x.GeneratorUpdated), x => Assert.True(x.DistributionMatching is null && x.Regression is null));
        Assert.All(h.Where(x => x.GeneratorUpdated), x => Assert.True(x.DistributionMatching is not null && x.Regression is not null));
        Assert.All(h, x => Assert.True(double.IsFinite(x.FakeScore)));
        Assert.Equal(3, result.Metrics.GeneratorUpdates);
    }

    [Fact]
    public void A_resumed_stage_ends_bit_identical_to_an_uninterrupted_one()
    {
        using var whole = NewStudent();
        var expected = StateDict.Of(Train(Everything, whole, "whole").Student.Trainable);

        using var interrupted = NewStudent();
        using var cts = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() => Train(Everything, interrupted, "resumed", cts.Token,
            p => { if (p.Step == 3) cts.Cancel(); }));
        Assert.True(Directory.Exists(Path.Combine(dir, "resumed", "checkpoint")));
        using var resumedStudent = NewStudent(seed: 123); // other start weights: the checkpoint replaces them
        var starts = new List<int>();
        var resumed = Train(Everything, resumedStudent, "resumed", progress: p => starts.Add(p.ResumedFrom));
        Assert.Equal([3, 3, 3], starts);
        var actual = StateDict.Of(resumed.Student.Trainable);
        foreach (var (key, value) in expected)
            Assert.True(value.equal(actual[key]).all().item<bool>(), $"{key} differs after resuming");
        var fakeWhole = SafeTensors.Load(Path.Combine(dir, "whole", "final", DmdTrainer.FakeScoreFile));
        var fakeResumed = SafeTensors.Load(Path.Combine(dir, "resumed", "final", DmdTrainer.FakeScoreFile));
        foreach (var (key, value) in fakeWhole)
            Assert.True(value.equal(fakeResumed[key]).all().item<bool>(), $"fake score {key} differs after resuming");
        var h = resumed.Metrics.History;
        Assert.Equal(Everything.Steps, h.Count);
        Assert.All(h.Where(x => x.GeneratorUpdated), x =>
        {
            Assert.NotNull(x.Regression); Assert.NotNull(x.GanGenerator); Assert.NotNull(x.Reward);
            Assert.Contains("redness", x.Rewards!.Keys);
        });
        Assert.All(h, x => Assert.NotNull(x.GanDiscriminator));
    }

    [Fact]
    public void A_finished_stage_writes_a_tscd_layout_whose_lora_loads_and_is_loaded_not_retrained()
    {
        using var student = NewStudent();
        var first = Train(Tiny, student, "done");
        var layout = new SegmentStageLayout(Path.Combine(dir, "done"));
        Assert.True(File.Exists(layout.FinalStudent));
        Assert.True(File.Exists(Path.Combine(layout.Final, DmdTrainer.FakeScoreFile)));
        Assert.True(File.Exists(Path.Combine(layout.Dir, DmdTrainer.RegressionPairsFile)));
        Assert.False(Directory.Exists(layout.Checkpoint));
        Assert.Equal("dmd", SafeTensors.ReadMetadata(layout.FinalLora)["hypersd_method"]);
        using var loaded = LoraFormats.Load(layout.FinalLora, tiny.Unet);
        Assert.Equal(student.Lora!.Layers.Keys.Order(), loaded.Layers.Keys.Order());
        foreach (var (path, layer) in loaded.Layers)
            Assert.True(layer.UpWeight.eq(student.Lora.Layers[path].UpWeight).all().item<bool>(), path);
        Assert.Contains(loaded.Layers.Values, l => l.UpWeight.abs().max().item<float>() > 0); // it trained

        using var again = NewStudent(seed: 77);
        var second = Train(Tiny, again, "done", progress: _ => throw new InvalidOperationException("trained again"));
        Assert.Equal(first.Metrics.FinalFakeScore, second.Metrics.FinalFakeScore);
        Assert.True(again.Lora!.Layers.Values.First().UpWeight.eq(student.Lora.Layers.Values.First().UpWeight).all().item<bool>());
    }

    [Fact]
    public void The_regression_pairs_are_made_once_and_refused_when_the_stage_asks_for_others()
    {
        var path = Path.Combine(dir, "pairs.safetensors");
        var settings = new TeacherOdePairs.Settings(5, 3, 2.0, 11);
        using var made = TeacherOdePairs.LoadOrGenerate(path, tiny.Unet, tiny.Conditioner, tiny.Scheduler, tiny.Dataset, settings, 2);
        Assert.Equal([5L, 4, 8, 8], made.Samples.shape);
        var written = File.GetLastWriteTimeUtc(path);
        using var stored = TeacherOdePairs.LoadOrGenerate(path, tiny.Unet, tiny.Conditioner, tiny.Scheduler, tiny.Dataset, settings, 4);
        Assert.Equal(written, File.GetLastWriteTimeUtc(path));
        Assert.True(stored.Samples.equal(made.Samples).all().item<bool>() && stored.Noise.equal(made.Noise).all().item<bool>());
        // the batch size does not change what is made (beyond batched kernels' rounding)
        using var again = TeacherOdePairs.Generate(tiny.Unet, tiny.Conditioner, tiny.Scheduler, tiny.Dataset, settings, 3);
        Assert.True(again.Noise.equal(made.Noise).all().item<bool>() && again.Samples.allclose(made.Samples, rtol: 1e-4, atol: 1e-5));
        Assert.False(made.Samples.allclose(made.Noise), "the teacher did not move the noise");
        var e = Assert.Throws<InvalidDataException>(() => TeacherOdePairs.LoadOrGenerate(path, tiny.Unet, tiny.Conditioner,
            tiny.Scheduler, tiny.Dataset, settings with { TeacherSteps = 4 }, 2));
        Assert.Contains("teacher_steps 3", e.Message);
    }

    [Fact]
    public void An_sdxl_stage_trains_with_every_term()
    {
        using var sdxl = new TinyTeacher(sdxl: true);
        using var student = NewStudent(teacher: sdxl);
        var result = Train(Everything with { Steps = 3 }, student, "sdxl", teacher: sdxl);
        Assert.Equal(3, result.Metrics.History.Count);
        Assert.All(result.Metrics.History, h => Assert.True(double.IsFinite(h.FakeScore)));
    }

    [Theory]
    [InlineData("steps")]
    [InlineData("batch_size")]
    [InlineData("generator_learning_rate")]
    [InlineData("fake_score_learning_rate")]
    [InlineData("weight_decay")]
    [InlineData("max_grad_norm")]
    [InlineData("warmup_steps")]
    [InlineData("generator_update_every")]
    [InlineData("min_timestep_fraction")]
    [InlineData("max_timestep_fraction")]
    [InlineData("real_guidance")]
    [InlineData("distribution_matching_weight")]
    [InlineData("regression_weight")]
    [InlineData("regression_pairs")]
    [InlineData("regression_teacher_steps")]
    [InlineData("regression_guidance")]
    [InlineData("reward_weight")]
    [InlineData("reward_alpha")]
    [InlineData("gan_generator_weight")]
    [InlineData("gan_discriminator_weight")]
    [InlineData("fake_score_rank")]
    [InlineData("fake_score_alpha")]
    [InlineData("checkpoint_every")]
    public void Bad_settings_are_named(string field)
    {
        var config = field switch
        {
            "steps" => Tiny with { Steps = 0 },
            "batch_size" => Tiny with { BatchSize = 0 },
            "generator_learning_rate" => Tiny with { GeneratorLearningRate = 0 },
            "fake_score_learning_rate" => Tiny with { FakeScoreLearningRate = -1e-5 },
            "weight_decay" => Tiny with { WeightDecay = -1 },
            "max_grad_norm" => Tiny with { MaxGradNorm = 0 },
            "warmup_steps" => Tiny with { WarmupSteps = Tiny.Steps },
            "generator_update_every" => Tiny with { GeneratorUpdateEvery = 0 },
            "min_timestep_fraction" => Tiny with { MinTimestepFraction = 0.5, MaxTimestepFraction = 0.5 },
            "max_timestep_fraction" => Tiny with { MaxTimestepFraction = 1.2 },
            "real_guidance" => Tiny with { RealGuidance = 0.5 },
            "distribution_matching_weight" => Tiny with { DistributionMatchingWeight = -1 },
            "regression_weight" => Tiny with { RegressionWeight = -1 },
            "regression_pairs" => Tiny with { RegressionPairs = 0 },
            "regression_teacher_steps" => Tiny with { RegressionTeacherSteps = 0 },
            "regression_guidance" => Tiny with { RegressionGuidance = double.NaN },
            "reward_weight" => Tiny with { RewardWeight = -1 },
            "reward_alpha" => Tiny with { RewardAlpha = double.PositiveInfinity },
            "gan_generator_weight" => Tiny with { GanGeneratorWeight = -1 },
            "gan_discriminator_weight" => Tiny with { GanGeneratorWeight = 1e-3, GanDiscriminatorWeight = 0 },
            "fake_score_rank" => Tiny with { FakeScoreRank = 0 },
            "fake_score_alpha" => Tiny with { FakeScoreAlpha = 0 },
            _ => Tiny with { CheckpointEvery = 0 },
        };
        using var student = NewStudent();
        var e = Assert.Throws<ArgumentException>(() => Train(config, student, "bad", rewards: Rewards));
        Assert.Contains($"'{field}'", e.Message);
    }

    [Fact]
    public void No_generator_loss_at_all_is_refused()
    {
        using var student = NewStudent();
        var e = Assert.Throws<ArgumentException>(() => Train(Tiny with { DistributionMatchingWeight = 0, RegressionWeight = 0 },
            student, "nothing"));
        Assert.Contains("nothing would train the generator", e.Message);
    }

    [Fact]
    public void A_reward_weight_without_rewards_is_refused_not_skipped()
    {
        using var student = NewStudent();
        var e = Assert.Throws<ArgumentException>(() => DmdTrainer.Train(Tiny with { RewardWeight = 1 }, tiny.Unet,
            new ReflTrainerTests.ChannelDecoder(), tiny.Conditioner, tiny.Scheduler, tiny.Dataset, null, student, dir));
        Assert.Contains("'reward_weight'", e.Message);
        Assert.Contains("no rewards", e.Message);
    }

    [Fact]
    public void A_full_copy_student_is_refused()
    {
        using var student = SegmentStudent.FullCopy(tiny.Unet);
        var e = Assert.Throws<ArgumentException>(() => Train(Tiny, student, "full"));
        Assert.Contains("LoRA", e.Message);
    }
}
