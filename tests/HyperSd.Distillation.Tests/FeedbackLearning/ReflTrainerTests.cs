using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Distillation.FeedbackLearning;
using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Tests.Trajectories;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.FeedbackLearning;

public sealed class ReflTrainerTests : IDisposable
{
    readonly TinyTeacher tiny = new();
    readonly string dir = Directory.CreateTempSubdirectory("refl-").FullName;

    public void Dispose()
    {
        tiny.Dispose();
        Directory.Delete(dir, true);
    }

    static readonly ReflConfig Tiny = new()
    {
        StudentSteps = 2, StopFrom = 0, Steps = 6, BatchSize = 4, Seed = 5, LearningRate = 1e-2, RewardScale = 1, Alpha = 1,
        AnchorWeight = 0.5, CheckpointEvery = 2,
    };

    /// <summary>The tiny teacher's 4-channel 8×8 latents as images: the first three channels through a sigmoid.</summary>
    internal sealed class ChannelDecoder : IAutoencoder
    {
        public int LatentChannels => 4;
        public int ScaleFactor => 1;
        public Tensor EncodeLatents(Tensor images, Generator? generator = null) => throw new NotSupportedException();
        public Tensor DecodeLatents(Tensor latents) => latents[.., ..3].sigmoid();
        public void SavePretrained(string dir) => throw new NotSupportedException();
    }

    /// <summary>How red an image is: its first channel's mean (a reward the student can raise).</summary>
    internal sealed class Redness : IImageReward
    {
        public string Name => "redness";
        public Tensor Reward(IReadOnlyList<string> prompts, Tensor images) => images[.., 0].mean([1, 2]);
        public Tensor Score(IReadOnlyList<string> prompts, Tensor images) { using var _ = no_grad(); return Reward(prompts, images); }
    }

    SegmentStudent NewStudent(long seed = 9)
    {
        using var g = new Generator((ulong)seed, CPU);
        return SegmentStudent.WithLora(tiny.Unet, new LoraConfig(4, 4), g);
    }

    ReflResult Train(ReflConfig config, SegmentStudent student, string name, CancellationToken token = default,
        Action<ReflProgress>? progress = null) =>
        ReflTrainer.Train(config, tiny.Unet, new ChannelDecoder(), tiny.Conditioner, tiny.Scheduler, tiny.Dataset,
            new WeightedReward([(new Redness(), 1.0)]), student, Path.Combine(dir, name), progress, token);

    [Fact]
    public void The_trailing_grid_is_diffusers()
    {
        Assert.Equal([999L], ReflTrainer.TrailingTimesteps(1000, 1));
        Assert.Equal([999L, 749, 499, 249], ReflTrainer.TrailingTimesteps(1000, 4));
    }

    [Theory]
    [InlineData(1, 0.75, 0)]
    [InlineData(4, 0.75, 3)] // ImageReward's last quarter: the 4-step student's last step only
    [InlineData(8, 0.75, 6)]
    [InlineData(4, 0.0, 0)]
    [InlineData(4, 0.5, 2)]
    public void The_graded_step_is_drawn_from_the_late_steps(int k, double stopFrom, int first)
    {
        Assert.Equal(first, (Tiny with { StudentSteps = k, StopFrom = stopFrom }).FirstStop);
        using var student = NewStudent();
        var history = Train(Tiny with { StudentSteps = k, StopFrom = stopFrom, Steps = 12 }, student, $"late-{k}-{stopFrom}")
            .Metrics.History;
        Assert.All(history, h => Assert.InRange(h.StopIndex, first, k - 1));
        if (k - first > 1) Assert.True(history.Select(h => h.StopIndex).Distinct().Count() > 1, "one stop step only");
    }

    [Fact]
    public void The_reward_rises()
    {
        using var student = NewStudent();
        var result = Train(Tiny with { Steps = 40, AnchorWeight = 0, StudentSteps = 1 }, student, "rises");
        var h = result.Metrics.History;
        double first = h.Take(5).Average(x => x.MeanReward), last = h.TakeLast(5).Average(x => x.MeanReward);
        Assert.True(last > first + 0.05, $"the reward rose only from {first} to {last}");
    }

    [Fact]
    public void A_resumed_stage_ends_bit_identical_to_an_uninterrupted_one()
    {
        using var whole = NewStudent();
        var expected = StateDict.Of(Train(Tiny, whole, "whole").Student.Trainable);

        using var interrupted = NewStudent();
        using var cts = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() => Train(Tiny, interrupted, "resumed", cts.Token,
            p => { if (p.Step == 3) cts.Cancel(); }));
        using var resumedStudent = NewStudent(seed: 123); // other start weights: the checkpoint replaces them
        var stops = new List<int>();
        var resumed = Train(Tiny, resumedStudent, "resumed", progress: p => stops.Add(p.ResumedFrom));
        Assert.All(stops, s => Assert.Equal(3, s));
        var actual = StateDict.Of(resumed.Student.Trainable);
        foreach (var (key, value) in expected)
            Assert.True(value.equal(actual[key]).all().item<bool>(), $"{key} differs after resuming");
        Assert.Equal(Tiny.Steps, resumed.Metrics.History.Count);
        Assert.Contains(resumed.Metrics.History, h => h.StopIndex == 1); // both of the 2-step student's steps were trained
        Assert.Contains(resumed.Metrics.History, h => h.StopIndex == 0);
    }

    [Fact]
    public void A_finished_stage_is_loaded_not_retrained_and_writes_what_a_tscd_stage_writes()
    {
        using var student = NewStudent();
        var first = Train(Tiny, student, "done");
        var layout = new SegmentStageLayout(Path.Combine(dir, "done"));
        Assert.True(File.Exists(layout.FinalStudent) && File.Exists(layout.FinalLora));
        using var again = NewStudent(seed: 77);
        var second = Train(Tiny, again, "done", progress: _ => throw new InvalidOperationException("trained again"));
        Assert.Equal(first.Metrics.FinalReward, second.Metrics.FinalReward);
    }

    [Theory]
    [InlineData("student_steps")]
    [InlineData("steps")]
    [InlineData("batch_size")]
    [InlineData("learning_rate")]
    [InlineData("reward_scale")]
    [InlineData("anchor_weight")]
    [InlineData("stop_from")]
    public void Bad_settings_are_named(string field)
    {
        var config = field switch
        {
            "student_steps" => Tiny with { StudentSteps = 0 },
            "steps" => Tiny with { Steps = 0 },
            "batch_size" => Tiny with { BatchSize = 0 },
            "learning_rate" => Tiny with { LearningRate = 0 },
            "reward_scale" => Tiny with { RewardScale = -1 },
            "stop_from" => Tiny with { StopFrom = 1 },
            _ => Tiny with { AnchorWeight = -1 },
        };
        using var student = NewStudent();
        var e = Assert.Throws<ArgumentException>(() => Train(config, student, "bad"));
        Assert.Contains($"'{field}'", e.Message);
    }

    [Fact]
    public void Reward_weights_all_zero_are_refused_by_name()
    {
        var e = Assert.Throws<ArgumentException>(() => new WeightedReward([(new Redness(), 0.0)]));
        Assert.Contains("all zero", e.Message);
        Assert.Contains("redness", e.Message);
    }

    [Fact]
    public void The_weighted_score_is_the_weighted_reward_without_gradients()
    {
        var reward = new WeightedReward([(new Redness(), 2.0)]);
        using var images = rand(3, 3, 4, 4).requires_grad_();
        using var trained = reward.Compute(["a", "b", "c"], images).Reward;
        using var scored = reward.Score(["a", "b", "c"], images);
        Assert.False(scored.requires_grad);
        Assert.Equal(trained.detach().data<float>().ToArray(), scored.data<float>().ToArray());
    }

    [Fact]
    public void A_full_copy_student_is_refused()
    {
        using var student = SegmentStudent.FullCopy(tiny.Unet);
        var e = Assert.Throws<ArgumentException>(() => Train(Tiny, student, "full"));
        Assert.Contains("LoRA", e.Message);
    }
}
