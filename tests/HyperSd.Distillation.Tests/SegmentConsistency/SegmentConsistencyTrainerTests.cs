using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Tests.Trajectories;
using HyperSd.Distillation.Trajectories;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.SegmentConsistency;

public class SegmentConsistencyTrainerTests : IDisposable
{
    readonly ITestOutputHelper output;
    readonly TinyTeacher tiny = new();
    readonly TrajectoryShard shard;
    readonly string dir = Directory.CreateTempSubdirectory("tscd-").FullName;

    public SegmentConsistencyTrainerTests(ITestOutputHelper output)
    {
        this.output = output;
        shard = TrajectorySampling.Generate(tiny.Unet, tiny.Conditioner, tiny.Scheduler, tiny.Dataset,
            new TrajectoryOptions(Count: 32, Seed: 7, BatchSize: 16));
    }

    public void Dispose()
    {
        shard.Dispose();
        tiny.Dispose();
        Directory.Delete(dir, true);
    }

    static readonly SegmentStageConfig Tiny = new()
    {
        Segments = 2, Steps = 6, BatchSize = 4, Seed = 11, LearningRate = 1e-3, Lora = new LoraConfig(4, 4), CheckpointEvery = 2,
    };

    SegmentStageResult Train(SegmentStageConfig config, string name, Action<SegmentProgress>? progress = null,
        CancellationToken token = default, SegmentStudent? student = null) =>
        SegmentConsistencyTrainer.Train(config, tiny.Unet, tiny.Conditioner, tiny.Scheduler, [shard], Path.Combine(dir, name), progress, token, student);

    static Dictionary<string, Tensor> Weights(nn.Module m) => StateDict.Of(m);

    [Fact]
    public void The_consistency_loss_falls()
    {
        var config = Tiny with { Steps = 80, LearningRate = 3e-3, BatchSize = 8, CheckpointEvery = 1000 };
        var result = Train(config, "falls");
        using var _ = result.Student;
        var h = result.Metrics.History;
        double first = h.Take(10).Average(x => x.Consistency), last = h.TakeLast(10).Average(x => x.Consistency);
        output.WriteLine($"consistency loss: first 10 steps {first:F4}, last 10 {last:F4} (ratio {last / first:F3})");
        output.WriteLine(string.Join(" ", h.Select(x => x.Consistency.ToString("F3"))));
        Assert.True(last < 0.8 * first, $"loss fell only from {first} to {last}");
    }

    [Fact]
    public void Adversarial_steps_train_the_heads_and_leave_the_teacher_alone()
    {
        var teacherBefore = Weights(tiny.Unet).ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var reports = new List<SegmentProgress>();
        var result = Train(Tiny with { Steps = 4, Weights = new LossWeights(1, 0.5), EmaDecay = 0.9, PerturbationScale = 0.01 }, "adv", reports.Add);
        using var _ = result.Student;
        Assert.Equal([1, 2, 3, 4], reports.Select(r => r.Step));
        Assert.All(reports, r => Assert.Equal(0, r.ResumedFrom));
        Assert.All(reports, r => Assert.True(r.Losses.Generator is > 0 && r.Losses.Discriminator is > 0 && r.StepsPerSecond > 0));
        // the discriminator learns: its hinge loss moves between steps
        Assert.NotEqual(reports[0].Losses.Discriminator, reports[^1].Losses.Discriminator);
        foreach (var (key, value) in Weights(tiny.Unet)) Assert.True(value.eq(teacherBefore[key]).all().item<bool>(), key);
        Assert.Contains(result.Lora!.Layers.Values, l => l.UpWeight.abs().max().item<float>() > 0);
        output.WriteLine(string.Join("\n", reports.Select(r => $"{r.Step}: c {r.Losses.Consistency:F4} g {r.Losses.Generator:F4} d {r.Losses.Discriminator:F4} ({r.StepsPerSecond:F2} steps/s)")));
    }

    [Fact]
    public void The_adversarial_term_draws_from_its_own_generator_so_the_batches_stay_those_of_the_run_without_it()
    {
        var without = Train(Tiny with { Steps = 5, PerturbationScale = 0.01 }, "mse-only");
        var with = Train(Tiny with { Steps = 5, PerturbationScale = 0.01, Weights = new LossWeights(1, 1e-9) }, "negligible-adv");
        using var _ = without.Student;
        using var __ = with.Student;
        // a negligible term on the same batches and perturbations: the same consistency losses, step for step
        var a = without.Metrics.History.Select(h => h.Consistency).ToList();
        var b = with.Metrics.History.Select(h => h.Consistency).ToList();
        Assert.Equal(a[0], b[0]);
        for (int i = 0; i < a.Count; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-6 * Math.Abs(a[i]), $"step {i + 1}: {a[i]} vs {b[i]}");
        Assert.All(with.Metrics.History, h => Assert.NotNull(h.Generator));
    }

    [Fact]
    public void A_resumed_stage_ends_with_exactly_the_weights_of_an_uninterrupted_one()
    {
        // the learning rate follows the step too: a resume must pick the schedule up where it stopped
        var config = Tiny with
        {
            Steps = 7, Weights = new LossWeights(1, 0.2), EmaDecay = 0.5, PerturbationScale = 0.01, CheckpointEvery = 2,
            WarmupSteps = 2, LearningRateSchedule = LearningRateSchedule.Cosine,
        };
        using var whole = Train(config, "whole").Student;

        using var cts = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() => Train(config, "resumed", p => { if (p.Step == 3) cts.Cancel(); }, cts.Token));
        Assert.True(Directory.Exists(Path.Combine(dir, "resumed", "checkpoint")));
        var reports = new List<SegmentProgress>();
        var resumed = Train(config, "resumed", reports.Add);
        using var _ = resumed.Student;
        Assert.Equal([4, 5, 6, 7], reports.Select(r => r.Step));
        Assert.All(reports, r => Assert.Equal(3, r.ResumedFrom));

        var expected = Weights(whole.Trainable);
        foreach (var (key, value) in Weights(resumed.Student.Trainable))
            Assert.True(value.eq(expected[key]).all().item<bool>(), $"{key} differs after resume");
        // a finished stage is loaded, not trained again
        var again = Train(config, "whole", p => Assert.Fail("a finished stage trained again"));
        using var __ = again.Student;
        Assert.Equal(again.Metrics.History, resumed.Metrics.History);
        Assert.True(again.Lora!.Layers.Values.First().UpWeight.eq(whole.Lora!.Layers.Values.First().UpWeight).all().item<bool>());
    }

    [Fact]
    public void The_LoRA_file_loads_and_stages_chain()
    {
        var tscd = new TscdConfig { Stages = [2, 1], Stage = Tiny with { Steps = 3 } };
        var results = SegmentConsistencyTrainer.TrainStages(tscd, tiny.Unet, tiny.Conditioner, tiny.Scheduler, [shard], dir);
        using var student = results[^1].Student;
        Assert.Same(results[0].Student, results[1].Student); // k = 1 continued from k = 2's LoRA
        Assert.Equal([2, 1], results.Select(r => r.Metrics.Segments));
        foreach (var k in new[] { 2, 1 })
        {
            using var loaded = LoraFormats.Load(Path.Combine(dir, $"stage-k{k}", "final", "lora.safetensors"), tiny.Unet);
            Assert.Equal(student.Lora!.Layers.Keys.Order(), loaded.Layers.Keys.Order());
            if (k == 1)
                foreach (var (path, layer) in loaded.Layers)
                    Assert.True(layer.UpWeight.eq(student.Lora.Layers[path].UpWeight).all().item<bool>(), path);
        }
    }

    [Fact]
    public void Full_fine_tuning_trains_a_copy()
    {
        var result = Train(Tiny with { Steps = 2, Lora = null }, "full");
        using var _ = result.Student;
        Assert.Null(result.Lora);
        Assert.NotNull(result.Student.Unet);
        var teacher = Weights(tiny.Unet);
        Assert.Contains(Weights(result.Student.Unet!), kv => !kv.Value.eq(teacher[kv.Key]).all().item<bool>());
        Assert.True(File.Exists(Path.Combine(dir, "full", "final", "unet", "config.json")));
    }

    [Fact]
    public void An_sdxl_stage_trains_with_the_adversarial_term_and_resumes_exactly()
    {
        using var xl = new TinyTeacher(sdxl: true);
        using var data = TrajectorySampling.Generate(xl.Unet, xl.Conditioner, xl.Scheduler, xl.Dataset,
            new TrajectoryOptions(Count: 16, Seed: 7, BatchSize: 8));
        var config = Tiny with { Weights = new LossWeights(1.0, 0.1) };
        SegmentStageResult Run(string name) =>
            SegmentConsistencyTrainer.Train(config, xl.Unet, xl.Conditioner, xl.Scheduler, [data], Path.Combine(dir, name));

        var whole = Run("xl-whole");
        using var _ = whole.Student;
        Assert.All(whole.Metrics.History, h => Assert.True(double.IsFinite(h.Consistency) && h.Generator is { } g && double.IsFinite(g)));
        using var cancel = new CancellationTokenSource();
        int seen = 0;
        Assert.ThrowsAny<OperationCanceledException>(() => SegmentConsistencyTrainer.Train(config, xl.Unet, xl.Conditioner, xl.Scheduler,
            [data], Path.Combine(dir, "xl-resumed"), p => { if (++seen == 3) cancel.Cancel(); }, cancel.Token).Student.Dispose());
        var resumed = Run("xl-resumed");
        using var __ = resumed.Student;
        foreach (var (key, value) in Weights(whole.Student.Trainable))
            Assert.True(value.eq(Weights(resumed.Student.Trainable)[key]).all().item<bool>(), $"{key} differs after resume");
    }
}
