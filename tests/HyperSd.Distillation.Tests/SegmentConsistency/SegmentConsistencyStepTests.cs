using HyperSd.Diffusion.Models.Unets;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Tests.Trajectories;
using HyperSd.Distillation.Trajectories;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.SegmentConsistency;

/// <summary>
/// One TSCD training step checked against a consistency loss computed by hand: ᾱ from the scaled-linear betas in float64,
/// the models' ε at the two points, the DDIM jumps written out. The student is a full copy of a second tiny UNet (other
/// weights than the teacher), so a target made by the wrong network shows. k = 4 on the 1000/50 grid: segments end at
/// 0, 239, 499 and 739; grid index i is timestep 20(i + 1) − 1 and its teacher step reaches 20i − 1.
/// </summary>
public sealed class SegmentConsistencyStepTests : IDisposable
{
    readonly ITestOutputHelper output;
    readonly TinyTeacher tiny = new(seed: 1, rows: 1);
    readonly TinyTeacher other = new(seed: 2, rows: 1);
    readonly string dir = Directory.CreateTempSubdirectory("tscd-step-").FullName;
    readonly double[] alphaProd = ScaledLinearAlphaProd(0.00085, 0.012, 1000);
    readonly Tensor ids;

    public SegmentConsistencyStepTests(ITestOutputHelper output)
    {
        this.output = output;
        ids = tiny.Dataset.InputIds[..1].clone();
    }

    public void Dispose()
    {
        ids.Dispose();
        tiny.Dispose();
        other.Dispose();
        Directory.Delete(dir, true);
    }

    static readonly SegmentStageConfig OneStep = new()
    {
        Segments = 4, SolverSteps = 50, Steps = 1, BatchSize = 1, Seed = 3, LearningRate = 1e-3, Lora = null, HuberC = null,
        PerturbationScale = 0, EmaDecay = 0, Weights = new LossWeights(1, 0), CheckpointEvery = 1000,
    };

    /// <summary>ᾱ_t = Π_{i ≤ t} (1 − β_i), β = linspace(√β_start, √β_end, T)² (SD's scaled-linear schedule).</summary>
    static double[] ScaledLinearAlphaProd(double start, double end, int steps)
    {
        var result = new double[steps];
        double product = 1;
        for (int i = 0; i < steps; i++)
        {
            double root = Math.Sqrt(start) + (Math.Sqrt(end) - Math.Sqrt(start)) * i / (steps - 1);
            product *= 1 - root * root;
            result[i] = product;
        }
        return result;
    }

    Tensor Epsilon(UNet2DConditionModel unet, Tensor x, long t)
    {
        using var _ = no_grad();
        using var timestep = tensor(new[] { t });
        return tiny.Conditioner.Condition(ids, x).Predict(unet, x, timestep);
    }

    /// <summary>DDIM from (x, ε) at t to s: x̂0 = (x − √(1 − ᾱ_t)·ε)/√ᾱ_t, then √ᾱ_s·x̂0 + √(1 − ᾱ_s)·ε.</summary>
    Tensor Jump(Tensor x, Tensor eps, long from, long to)
    {
        double a = alphaProd[from], s = alphaProd[to];
        using var x0 = (x - Math.Sqrt(1 - a) * eps) / Math.Sqrt(a);
        return Math.Sqrt(s) * x0 + Math.Sqrt(1 - s) * eps;
    }

    static double Mse(Tensor a, Tensor b)
    {
        using var d = a - b;
        return d.square().mean().item<float>();
    }

    /// <summary>Runs one step of a stage on a one-row shard and returns its consistency loss (taken before the update).</summary>
    double TrainOneStep(string name, Tensor xt, int gridIndex, Tensor xPrev, long recordedPrevTimestep)
    {
        long t = 20 * (gridIndex + 1) - 1;
        using var shard = new TrajectoryShard(xt.clone(), tensor(new[] { t }), tensor(new long[] { gridIndex }),
            tensor(new[] { 4.5f }), ids.clone(), tensor(new long[] { 0 }), xPrev.clone(), tensor(new[] { recordedPrevTimestep }),
            1000, 50);
        var reports = new List<SegmentProgress>();
        var result = SegmentConsistencyTrainer.Train(OneStep, tiny.Unet, tiny.Conditioner, tiny.Scheduler, [shard],
            Path.Combine(dir, name), reports.Add, student: SegmentStudent.FullCopy(other.Unet));
        result.Student.Dispose();
        Assert.Single(reports);
        Assert.Equal(reports[0].Losses.Consistency, result.Metrics.History[0].Consistency);
        return reports[0].Losses.Consistency;
    }

    (Tensor Xt, Tensor XPrev) TeacherStep(int gridIndex, ulong seed)
    {
        long t = 20 * (gridIndex + 1) - 1, prev = Math.Max(t - 20, 0);
        using var g = new Generator(seed, CPU);
        var xt = randn([1, 4, 8, 8], generator: g);
        using var eps = Epsilon(tiny.Unet, xt, t);
        return (xt, Jump(xt, eps, t, prev));
    }

    void AssertOnlyExpectedMatches(double actual, double expected, IReadOnlyDictionary<string, double> wrong)
    {
        output.WriteLine($"loss {actual:G6}, by hand {expected:G6}; " + string.Join(", ", wrong.Select(w => $"{w.Key} {w.Value:G4}")));
        Assert.Equal(expected, actual, 1e-4 * expected);
        // the alternatives are far from the right value, so the check above tells them apart
        foreach (var (what, value) in wrong)
            Assert.True(Math.Abs(value - expected) > 0.05 * expected, $"{what} ({value}) is too close to the expected {expected}");
    }

    [Theory]
    [InlineData(30, 499)] // t = 619 in the third segment: jump to 499, not to t − s = 599 or another segment's end
    [InlineData(5, 0)]    // t = 119 in the first segment: jump to the data end, timestep 0 (ᾱ_0, set_alpha_to_one false)
    public void Inside_a_segment_both_jump_to_its_end_and_the_target_is_the_students_jump_from_t_minus_s(int gridIndex, long end)
    {
        var schedule = new SegmentSchedule(1000, 50, 4);
        Assert.Equal(end, schedule.EndFor(gridIndex));
        Assert.False(schedule.PrevIsOnBoundary(gridIndex));
        long t = 20 * (gridIndex + 1) - 1, prev = t - 20;
        var (xt, xPrev) = TeacherStep(gridIndex, seed: 40);
        using var _ = xt;
        using var __ = xPrev;
        using var studentAtT = Epsilon(other.Unet, xt, t);
        using var studentAtPrev = Epsilon(other.Unet, xPrev, prev);
        using var teacherAtPrev = Epsilon(tiny.Unet, xPrev, prev);
        double Loss(long to, Tensor targetEps) // prediction and target jumped to the same timestep
        {
            using var prediction = Jump(xt, studentAtT, t, to);
            using var target = Jump(xPrev, targetEps, prev, to);
            return Mse(prediction, target);
        }
        double expected = Loss(end, studentAtPrev);
        using var prediction = Jump(xt, studentAtT, t, end);
        var wrong = new Dictionary<string, double>
        {
            ["jump to t − s"] = Loss(prev, studentAtPrev),
            ["jump to the next segment's end"] = Loss(schedule.EndTimesteps[schedule.SegmentOf(gridIndex) + 1], studentAtPrev),
            ["target by the teacher"] = Loss(end, teacherAtPrev),
            ["target x_{t−s} itself"] = Mse(prediction, xPrev),
        };
        if (end > 0)
        {
            wrong["jump to 0"] = Loss(0, studentAtPrev);
            wrong["jump to the previous segment's end"] = Loss(schedule.EndTimesteps[schedule.SegmentOf(gridIndex) - 1], studentAtPrev);
        }

        double actual = TrainOneStep($"inside-{gridIndex}", xt, gridIndex, xPrev, prev);
        AssertOnlyExpectedMatches(actual, expected, wrong);
    }

    [Fact]
    public void On_a_boundary_the_target_is_the_teachers_x_t_minus_s_itself()
    {
        // grid index 25 (t = 519) opens the third segment: t − s = 499 is its end
        var schedule = new SegmentSchedule(1000, 50, 4);
        const int gridIndex = 25;
        const long t = 519, end = 499;
        Assert.Equal(end, schedule.EndFor(gridIndex));
        Assert.True(schedule.PrevIsOnBoundary(gridIndex));
        var (xt, xPrev) = TeacherStep(gridIndex, seed: 41);
        using var _ = xt;
        using var __ = xPrev;
        using var studentAtT = Epsilon(other.Unet, xt, t);
        using var prediction = Jump(xt, studentAtT, t, end);
        double expected = Mse(prediction, xPrev);

        // as the teacher recorded it: a DDIM jump from 499 to 499 is the identity, so here x_{t−s} and the student's
        // jump from it agree up to round-off; what this run checks is the prediction's end
        using var studentAtPrev = Epsilon(other.Unet, xPrev, end);
        using var predictionTo239 = Jump(xt, studentAtT, t, 239);
        using var targetTo239 = Jump(xPrev, studentAtPrev, end, 239);
        using var predictionTo0 = Jump(xt, studentAtT, t, 0);
        double consistent = TrainOneStep("boundary", xt, gridIndex, xPrev, end);
        AssertOnlyExpectedMatches(consistent, expected, new Dictionary<string, double>
        {
            ["both jump to the end of t − s's segment (239)"] = Mse(predictionTo239, targetTo239),
            ["prediction jumps to 0"] = Mse(predictionTo0, xPrev),
        });

        // the same row with its recorded t − s moved to 599: a student jump from x_{t−s} now lands elsewhere, x_{t−s}
        // itself does not move, and the step must still take x_{t−s} itself
        using var studentAtRecorded = Epsilon(other.Unet, xPrev, 599);
        using var jumpedTarget = Jump(xPrev, studentAtRecorded, 599, end);
        double moved = TrainOneStep("boundary-moved", xt, gridIndex, xPrev, 599);
        AssertOnlyExpectedMatches(moved, expected, new Dictionary<string, double>
        {
            ["target: the student's jump from x_{t−s}"] = Mse(prediction, jumpedTarget),
        });
    }
}
