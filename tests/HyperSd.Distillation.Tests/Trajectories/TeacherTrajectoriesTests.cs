using HyperSd.Distillation.Trajectories;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Trajectories;

public class TeacherTrajectoriesTests : IDisposable
{
    readonly TinyTeacher tiny = new();
    readonly string dir = Directory.CreateTempSubdirectory("traj-").FullName;

    public void Dispose()
    {
        tiny.Dispose();
        Directory.Delete(dir, true);
    }

    TrajectoryShard Generate(TrajectoryOptions options, Action<int>? progress = null) =>
        TrajectorySampling.Generate(tiny.Unet, tiny.Conditioner, tiny.Scheduler, tiny.Dataset, options, progress: progress);

    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void A_seed_fixes_the_samples()
    {
        var options = new TrajectoryOptions(Count: 10, Seed: 3, BatchSize: 4);
        using var a = Generate(options);
        using var b = Generate(options);
        using var c = Generate(options with { Seed = 4 });
        Assert.Equal(10, a.Count);
        foreach (var (x, y) in new[] { (a.NoisyLatents, b.NoisyLatents), (a.PrevLatents, b.PrevLatents), (a.Guidance, b.Guidance), (a.InputIds, b.InputIds) })
            Assert.True(Same(x, y));
        Assert.False(Same(a.NoisyLatents, c.NoisyLatents));
    }

    [Fact]
    public void Progress_is_reported_after_every_batch()
    {
        var done = new List<int>();
        using var shard = Generate(new TrajectoryOptions(Count: 10, Seed: 3, BatchSize: 4), done.Add);
        Assert.Equal([4, 8, 10], done);
    }

    [Fact]
    public void Rows_hold_the_grid_the_captions_and_the_guidance_range()
    {
        using var s = Generate(new TrajectoryOptions(Count: 12, Seed: 1, BatchSize: 5, GuidanceMin: 2, GuidanceMax: 3));
        var grid = s.GridIndices.data<long>().ToArray();
        var t = s.Timesteps.data<long>().ToArray();
        var prev = s.PrevTimesteps.data<long>().ToArray();
        for (int i = 0; i < grid.Length; i++)
        {
            Assert.Equal((grid[i] + 1) * 20 - 1, t[i]);
            Assert.Equal(Math.Max(t[i] - 20, 0), prev[i]);
        }
        using var ids = tiny.Dataset.InputIds.index_select(0, s.DatasetIndices);
        Assert.True(Same(ids, s.InputIds));
        Assert.True(s.Guidance.min().item<float>() >= 2 && s.Guidance.max().item<float>() <= 3);
    }

    [Fact]
    public void The_previous_latent_is_one_guided_DDIM_step_of_the_teacher()
    {
        using var s = Generate(new TrajectoryOptions(Count: 6, Seed: 5, BatchSize: 4));
        using var _ = no_grad();
        var alphas = tiny.Scheduler.AlphasCumprod;
        for (int i = 0; i < s.Count; i++)
        {
            var x = s.NoisyLatents[i].unsqueeze(0);
            long t = s.Timesteps[i].item<long>(), tp = s.PrevTimesteps[i].item<long>();
            double w = s.Guidance[i].item<float>();
            var cond = tiny.TextEncoder.call(s.InputIds[i].unsqueeze(0)).LastHiddenState;
            var uncond = tiny.TextEncoder.call(tiny.EmptyPromptIds).LastHiddenState;
            var tt = tensor(new[] { t });
            var epsC = tiny.Unet.forward(x, tt, cond);
            var epsU = tiny.Unet.forward(x, tt, uncond);
            double a = alphas[t].item<float>(), ap = alphas[tp].item<float>();
            Tensor X0(Tensor eps) => (x - Math.Sqrt(1 - a) * eps) / Math.Sqrt(a);
            var x0 = X0(epsC) + w * (X0(epsC) - X0(epsU));
            var eps = epsC + w * (epsC - epsU);
            var expected = Math.Sqrt(ap) * x0 + Math.Sqrt(1 - ap) * eps;
            var err = (expected - s.PrevLatents[i].unsqueeze(0)).abs().max().item<float>();
            Assert.True(err < 1e-4, $"row {i}: max error {err}");
        }
    }

    [Fact]
    public void Empty_prompts_replace_captions_and_shards_round_trip()
    {
        using var s = Generate(new TrajectoryOptions(Count: 5, Seed: 2, EmptyPromptProbability: 1));
        Assert.True(Same(s.InputIds, tiny.EmptyPromptIds.expand(5, -1)));
        var path = Path.Combine(dir, "shard.safetensors");
        s.Save(path);
        using var loaded = TrajectoryShard.Load(path);
        Assert.Equal((1000, 50), (loaded.NumTrainTimesteps, loaded.SolverSteps));
        Assert.True(Same(s.PrevLatents, loaded.PrevLatents) && Same(s.Timesteps, loaded.Timesteps) && Same(s.GridIndices, loaded.GridIndices));
        using var both = TrajectoryShard.Concat([s, loaded]);
        Assert.Equal(10, both.Count);
    }

    [Fact]
    public void Sdxl_rows_carry_both_tokenizers_ids_and_step_against_zeros_with_the_pooled_embedding_and_time_ids()
    {
        using var xl = new TinyTeacher(sdxl: true);
        using var s = TrajectorySampling.Generate(xl.Unet, xl.Conditioner, xl.Scheduler, xl.Dataset,
            new TrajectoryOptions(Count: 4, Seed: 5, BatchSize: 3));
        Assert.Equal([4L, 2, TinyTeacher.Tokens], s.InputIds.shape);
        using (var ids2 = xl.Dataset.InputIds2!.index_select(0, s.DatasetIndices))
            Assert.True(Same(ids2, s.InputIds.select(1, 1)));
        using var _ = no_grad();
        var alphas = xl.Scheduler.AlphasCumprod;
        var timeIds = tensor(TinyTeacher.SdxlTimeIds, float32).unsqueeze(0);
        for (int i = 0; i < s.Count; i++)
        {
            var x = s.NoisyLatents[i].unsqueeze(0);
            long t = s.Timesteps[i].item<long>(), tp = s.PrevTimesteps[i].item<long>();
            double w = s.Guidance[i].item<float>();
            var one = xl.TextEncoder.call(s.InputIds[i][0].unsqueeze(0));
            var two = xl.TextEncoder2!.call(s.InputIds[i][1].unsqueeze(0));
            var context = cat([one.HiddenStates[^2], two.HiddenStates[^2]], -1);
            var tt = tensor(new[] { t });
            var epsC = xl.Unet.forward(x, tt, context, new(two.TextEmbeds, timeIds));
            var epsU = xl.Unet.forward(x, tt, zeros_like(context), new(zeros_like(two.TextEmbeds!), timeIds));
            double a = alphas[t].item<float>(), ap = alphas[tp].item<float>();
            Tensor X0(Tensor eps) => (x - Math.Sqrt(1 - a) * eps) / Math.Sqrt(a);
            var expected = Math.Sqrt(ap) * (X0(epsC) + w * (X0(epsC) - X0(epsU))) + Math.Sqrt(1 - ap) * (epsC + w * (epsC - epsU));
            var err = (expected - s.PrevLatents[i].unsqueeze(0)).abs().max().item<float>();
            Assert.True(err < 1e-4, $"row {i}: max error {err}");
        }
    }

    [Fact]
    public void A_dataset_of_another_architecture_is_refused_by_name()
    {
        using var xl = new TinyTeacher(sdxl: true);
        var e = Assert.Throws<ArgumentException>(() =>
            TrajectorySampling.Generate(xl.Unet, xl.Conditioner, xl.Scheduler, tiny.Dataset, new TrajectoryOptions(Count: 2)));
        Assert.Contains("prepared for another architecture", e.Message);
    }
}
