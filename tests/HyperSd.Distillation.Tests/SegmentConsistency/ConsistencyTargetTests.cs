using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Tests.Trajectories;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.SegmentConsistency;

public class ConsistencyTargetTests : IDisposable
{
    readonly TinyTeacher tiny = new(rows: 1);
    public void Dispose() => tiny.Dispose();

    [Fact]
    public void The_jump_is_x0_and_eps_taken_to_the_end()
    {
        using var g = new Generator(1, CPU);
        using var x = randn([2, 4, 8, 8], generator: g);
        using var eps = randn([2, 4, 8, 8], generator: g);
        using var t = tensor(new long[] { 999, 139 });
        using var end = tensor(new long[] { 859, 119 });
        using var jumped = ConsistencyTarget.JumpToEnd(tiny.Scheduler, eps, t, x, end);
        var ac = tiny.Scheduler.AlphasCumprod;
        for (int i = 0; i < 2; i++)
        {
            double a = ac[t[i].item<long>()].item<float>(), ae = ac[end[i].item<long>()].item<float>();
            var x0 = (x[i] - Math.Sqrt(1 - a) * eps[i]) / Math.Sqrt(a);
            var expected = Math.Sqrt(ae) * x0 + Math.Sqrt(1 - ae) * eps[i];
            Assert.True(expected.allclose(jumped[i], atol: 1e-5));
        }
    }

    [Fact]
    public void On_the_boundary_the_target_is_the_teachers_step()
    {
        using var prev = ones(3, 4, 2, 2);
        using var jumped = zeros(3, 4, 2, 2);
        using var on = tensor(new[] { true, false, true });
        using var target = ConsistencyTarget.Select(on, prev, jumped);
        Assert.Equal([1f, 0f, 1f], target.mean([1, 2, 3]).data<float>().ToArray());
    }

    [Fact]
    public void Renoising_keeps_x_at_the_end_and_follows_the_forward_process_beyond()
    {
        using var g = new Generator(2, CPU);
        using var x = randn([2, 4, 8, 8], generator: g);
        using var z = randn([2, 4, 8, 8], generator: g);
        using var end = tensor(new long[] { 0, 499 });
        using var same = ConsistencyTarget.Renoise(tiny.Scheduler, x, end, end, z);
        Assert.True(same.allclose(x, atol: 1e-6));
        using var adv = tensor(new long[] { 100, 600 });
        using var noised = ConsistencyTarget.Renoise(tiny.Scheduler, x, end, adv, z);
        var ac = tiny.Scheduler.AlphasCumprod;
        double r = ac[600].item<float>() / ac[499].item<float>();
        Assert.True(noised[1].allclose(Math.Sqrt(r) * x[1] + Math.Sqrt(1 - r) * z[1], atol: 1e-5));
    }

    /// <summary>PCM re-noises fake and real with independent noise; shared noise gives equal pairs for equal inputs. The
    /// fake draws first, so it is the same either way.</summary>
    [Fact]
    public void The_adversarial_pair_is_renoised_with_independent_or_shared_noise()
    {
        using var g = new Generator(2, CPU);
        using var x = randn([2, 4, 8, 8], generator: g);
        using var end = tensor(new long[] { 0, 499 });
        using var adv = tensor(new long[] { 100, 600 });
        (Tensor Fake, Tensor Real) Pair(AdversarialNoise noise)
        {
            using var generator = new Generator(5, CPU);
            var (fake, real) = ConsistencyTarget.RenoisePair(tiny.Scheduler, x, x, end, adv, noise, generator);
            return (fake, real!);
        }
        var (fi, ri) = Pair(AdversarialNoise.Independent);
        var (fs, rs) = Pair(AdversarialNoise.Shared);
        Assert.True(fs.eq(rs).all().item<bool>());
        Assert.False(fi.allclose(ri, atol: 1e-3));
        Assert.True(fi.eq(fs).all().item<bool>());
        using var generator = new Generator(5, CPU);
        Assert.Null(ConsistencyTarget.RenoisePair(tiny.Scheduler, x, null, end, adv, AdversarialNoise.Independent, generator).Real);
        foreach (var t in new[] { fi, ri, fs, rs }) t.Dispose();
    }

    [Fact]
    public void Huber_is_about_the_absolute_error_and_null_gives_MSE()
    {
        using var a = full(10, 0.5f);
        using var b = zeros(10);
        Assert.Equal(0.5 - 0.001, ConsistencyTarget.Loss(a, b, 0.001).item<float>(), 4);
        Assert.Equal(0.25, ConsistencyTarget.Loss(a, b, null).item<float>(), 6);
    }
}
