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
        SegmentConsistencyTrainer.Train(config, tiny.Unet, tiny.Conditioner, tiny.Scheduler, [shard], Path.Combine(dir, name), progress,
            token, student);

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
        var config = Tiny with { Steps = 4, Weights = new LossWeights(1, 0.5), EmaDecay = 0.9, PerturbationScale = 0.01 };
        var result = Train(config, "adv", reports.Add);
        using var _ = result.Student;
        Assert.Equal([1, 2, 3, 4], reports.Select(r => r.Step));
        Assert.All(reports, r => Assert.True(r.ResumedFrom == 0 && r.StepsPerSecond > 0 && r.Losses.Consistency > 0));
        // PCM's alternation: steps 1 and 3 update the discriminator, 2 and 4 the student
        Assert.Equal([false, true, false, true], reports.Select(r => r.Losses.Generator is > 0));
        Assert.Equal([true, false, true, false], reports.Select(r => r.Losses.Discriminator is > 0));
        Assert.Equal([true, true, true, true], reports.Select(r => r.Losses.Generator is null != r.Losses.Discriminator is null));
        // the discriminator learns: its hinge loss moves between its steps
        Assert.NotEqual(reports[0].Losses.Discriminator, reports[2].Losses.Discriminator);
        foreach (var (key, value) in Weights(tiny.Unet)) Assert.True(value.eq(teacherBefore[key]).all().item<bool>(), key);
        Assert.Contains(result.Lora!.Layers.Values, l => l.UpWeight.abs().max().item<float>() > 0);
        Assert.NotNull(result.Metrics.FinalGeneratorLoss);
        Assert.NotNull(result.Metrics.FinalDiscriminatorLoss);
        output.WriteLine(string.Join("\n", reports.Select(r => $"{r.Step}: c {r.Losses.Consistency:F4} g {r.Losses.Generator:F4} " +
                                                              $"d {r.Losses.Discriminator:F4} ({r.StepsPerSecond:F2} steps/s)")));
        // where a step's time went: every phase of both kinds of step, adding up to the step's wall time
        var profile = result.Metrics.SecondsPerStep!;
        output.WriteLine(string.Join("\n", profile.Select(p => $"{p.Key}: {p.Value * 1000:F1} ms/step")));
        Assert.Equal(["data", "text encoder", "target (student at x_(t-s), no grad)", "student forward",
            "discriminator: teacher features, no grad", "discriminator heads and update", "free", "progress and checkpoints",
            "generator: teacher features of the fake", "student backward", "student optimizer"], profile.Keys);
        Assert.All(profile.Values, v => Assert.True(v > 0));
        Assert.InRange(profile.Values.Sum() * result.Metrics.StepsPerSecond, 0.9, 1.01);
    }

    /// <summary>Alternation by step (PCM): the student's weights change on odd steps only (0-based), the discriminator's on
    /// even ones only; read after every step, the discriminator's from the checkpoint the next step's report finds.</summary>
    [Fact]
    public void Alternating_steps_update_only_the_student_or_only_the_discriminator()
    {
        using var g = new Generator(3, CPU);
        using var student = SegmentStudent.WithLora(tiny.Unet, new LoraConfig(4, 4), g);
        var config = Tiny with { Steps = 6, Weights = new LossWeights(1, 0.5), CheckpointEvery = 1 };
        var checkpoint = Path.Combine(dir, "alternate", "checkpoint", "discriminator.safetensors");
        var students = new List<Dictionary<string, Tensor>> { Clone(student.Trainable) };
        var discriminators = new List<Dictionary<string, Tensor>>();
        using var result = Train(config, "alternate", p =>
        {
            students.Add(Clone(student.Trainable));
            if (p.Step >= 2) discriminators.Add(HyperSd.Diffusion.IO.SafeTensors.Load(checkpoint)); // the state after step p.Step − 1
        }, student: student).Student;

        static Dictionary<string, Tensor> Clone(nn.Module m) => Weights(m).ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        static bool Same(Dictionary<string, Tensor> a, Dictionary<string, Tensor> b) =>
            a.All(kv => kv.Value.eq(b[kv.Key]).all().item<bool>());
        // students[i] is after i steps: step index i (0-based) changed it iff odd
        Assert.Equal([true, false, true, false, true, false],
            Enumerable.Range(0, 6).Select(i => Same(students[i], students[i + 1])));
        // discriminators[j] is after j + 1 steps: step index j + 1 changed it iff even
        Assert.Equal([true, false, true, false], Enumerable.Range(0, 4).Select(j => Same(discriminators[j], discriminators[j + 1])));
    }

    [Fact]
    public void The_adversarial_term_draws_from_its_own_generator_so_the_batches_stay_those_of_the_run_without_it()
    {
        // joint steps: with alternation the run without the term would update the student on every step
        var joint = Tiny with { Steps = 5, PerturbationScale = 0.01, AdversarialSchedule = AdversarialSchedule.Joint };
        var without = Train(joint, "mse-only");
        var with = Train(joint with { Weights = new LossWeights(1, 1e-9) }, "negligible-adv");
        using var _ = without.Student;
        using var __ = with.Student;
        // a negligible term on the same batches and perturbations: the same consistency losses, step for step
        var a = without.Metrics.History.Select(h => h.Consistency).ToList();
        var b = with.Metrics.History.Select(h => h.Consistency).ToList();
        Assert.Equal(a[0], b[0]);
        for (int i = 0; i < a.Count; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-6 * Math.Abs(a[i]), $"step {i + 1}: {a[i]} vs {b[i]}");
        Assert.All(with.Metrics.History, h => Assert.True(h.Generator is not null && h.Discriminator is not null));
    }

    /// <summary>Heads fused into one call per layer give each head's own logits and parameter gradients.</summary>
    [Fact]
    public void Fused_heads_are_each_heads_arithmetic()
    {
        using var g = new Generator(3, CPU);
        var heads = Enumerable.Range(0, 4).Select(_ => new DiscriminatorHead(16, 16)).ToList();
        foreach (var h in heads) h.Reset(g);
        using (no_grad()) // GroupNorm's affine parameters away from ones/zeros, so a mix-up of heads shows
            foreach (var p in heads.SelectMany(h => h.parameters())) p.add_(randn(p.shape, generator: g) * 0.1);
        using var scope = NewDisposeScope();
        var x = randn([3, 16, 8, 8], generator: g);
        var fused = DiscriminatorHead.Fused(heads, x);
        var one = heads.Select(h => h.call(x)).ToArray();
        Assert.Equal(4, fused.Length);
        for (int i = 0; i < 4; i++) Assert.True(fused[i].allclose(one[i], rtol: 1e-4, atol: 1e-5), $"head {i}'s logits differ");
        List<Tensor> Grads(Tensor[] logits)
        {
            foreach (var p in heads.SelectMany(h => h.parameters())) p.grad = null;
            stack(logits.Select((l, i) => l.mean() * (i + 1)).ToArray()).sum().backward();
            return heads.SelectMany(h => h.parameters()).Select(p => p.grad!.clone()).ToList();
        }
        var fusedGrads = Grads(fused);
        var oneGrads = Grads(one);
        Assert.All(fusedGrads.Zip(oneGrads), p => Assert.True(p.First.allclose(p.Second, rtol: 1e-4, atol: 1e-5), "a gradient differs"));
        foreach (var h in heads) h.Dispose();
    }

    /// <summary>PCM's discriminator has 4 independent heads per feature map, named heads.{feature}.{head}.</summary>
    [Fact]
    public void Heads_per_feature_map_multiply_the_discriminators_parameters()
    {
        long Count(int heads, out List<string> names)
        {
            using var g = new Generator(1, CPU);
            using var d = new SegmentDiscriminator(tiny.Unet.Config, null, g, headsPerFeature: heads);
            names = d.state_dict().Keys.Where(k => k.EndsWith("conv_out.weight")).ToList();
            return d.parameters().Sum(p => p.numel());
        }
        long one = Count(1, out var oneNames), four = Count(4, out var fourNames);
        int features = SegmentDiscriminator.FeatureChannels(tiny.Unet.Config).Count();
        Assert.Equal(4 * one, four);
        Assert.Equal((features, 4 * features), (oneNames.Count, fourNames.Count));
        Assert.Contains("heads.0.3.conv_out.weight", fourNames);
    }

    /// <summary>D's optimiser is PCM's AdamW (0, 0.999) with weight decay and gradient clipping. Clipped to 1e-12, Adam's
    /// first step is ~0 (the clipped gradient is far below its ε), so what moves D is the decay alone: p·(1 − lr·wd);
    /// unclipped, the first step moves the convolutions' weights by about lr.</summary>
    [Fact]
    public void The_discriminators_weight_decay_and_clipping_apply()
    {
        var clipped = Tiny with
        {
            Steps = 2, CheckpointEvery = 1, Weights = new LossWeights(1, 0.5), DiscriminatorLearningRate = 0.1,
            DiscriminatorWeightDecay = 0, DiscriminatorMaxGradNorm = 1e-12,
        };
        Dictionary<string, Tensor> AfterFirstStep(SegmentStageConfig config, string name)
        {
            Dictionary<string, Tensor>? d = null;
            var file = Path.Combine(dir, name, "checkpoint", "discriminator.safetensors");
            using var _ = Train(config, name, p => { if (p.Step == 2) d = HyperSd.Diffusion.IO.SafeTensors.Load(file); }).Student;
            return d!;
        }
        var still = AfterFirstStep(clipped, "clipped");
        var decayed = AfterFirstStep(clipped with { DiscriminatorWeightDecay = 2 }, "decayed");
        var free = AfterFirstStep(clipped with { DiscriminatorMaxGradNorm = null }, "free");
        foreach (var (key, value) in still)
        {
            Assert.True(decayed[key].allclose(0.8 * value, atol: 1e-4), $"{key}: not decayed by 1 − 0.1·2");
            // a conv bias before GroupNorm gets no gradient
            if (key.EndsWith(".weight") && key.Contains("conv"))
                Assert.True((free[key] - value).abs().max().item<float>() > 0.05, $"{key}: the unclipped step did not move it");
        }
    }

    /// <summary>D's shape follows the heads per feature map: a checkpoint of another head count is refused, naming the
    /// file and both sets of heads.</summary>
    [Fact]
    public void A_checkpoint_of_another_head_count_is_refused()
    {
        var config = Tiny with { Steps = 4, Weights = new LossWeights(1, 0.5), DiscriminatorHeadsPerFeature = 1 };
        using var cancel = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() =>
            Train(config, "heads", p => { if (p.Step == 2) cancel.Cancel(); }, cancel.Token));
        var e = Assert.Throws<InvalidDataException>(() => Train(config with { DiscriminatorHeadsPerFeature = 4 }, "heads"));
        output.WriteLine(e.Message);
        var file = Path.Combine(dir, "heads", "checkpoint", "discriminator.safetensors");
        Assert.StartsWith($"{file}: the checkpoint's discriminator has 5 heads (heads.0.0.conv_out.weight [1, 8, 1, 1]", e.Message);
        Assert.Contains("this stage's has 4 per feature map, 20 heads", e.Message);
        using var resumed = Train(config, "heads").Student; // the head count it was written with resumes
    }

    /// <summary>Cancelled after 3 steps and resumed there: mid-way through the alternation (step index 3 updates the student).</summary>
    [Theory]
    [InlineData(AdversarialSchedule.Alternate, AdversarialNoise.Independent)]
    [InlineData(AdversarialSchedule.Joint, AdversarialNoise.Shared)]
    public void A_resumed_stage_ends_with_exactly_the_weights_of_an_uninterrupted_one(AdversarialSchedule schedule, AdversarialNoise noise)
    {
        // the learning rate follows the step too: a resume must pick the schedule up where it stopped
        var config = Tiny with
        {
            Steps = 7, Weights = new LossWeights(1, 0.2), EmaDecay = 0.5, PerturbationScale = 0.01, CheckpointEvery = 2,
            WarmupSteps = 2, LearningRateSchedule = LearningRateSchedule.Cosine, AdversarialSchedule = schedule, AdversarialNoise = noise,
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
        Assert.All(whole.Metrics.History, h => Assert.True(double.IsFinite(h.Consistency)));
        Assert.All(whole.Metrics.History.Where((_, i) => i % 2 == 1), h => Assert.True(h.Generator is { } g && double.IsFinite(g)));
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
