using static TorchSharp.torch;

namespace HyperSd.Distillation.SegmentConsistency;

/// <summary>
/// TSCD's time grid, as PCM builds it: a DDIM solver grid of <see cref="SolverSteps"/> timesteps (i+1)·s − 1 with
/// s = num_train_timesteps / solver_steps (1000/50 → 19, 39, …, 999), split into k segments whose boundary grid
/// indices are floor(linspace(0, N, k, endpoint=False)). A segment ends at the grid timestep just before its boundary
/// index (0 for the first), which gives end timesteps {0, 119, 239, 359, 499, 619, 739, 859} for k = 8 on 1000/50.
/// </summary>
public sealed class SegmentSchedule
{
    public int NumTrainTimesteps { get; }
    public int SolverSteps { get; }
    public int Segments { get; }

    /// <summary>s: the teacher's DDIM step, in training timesteps.</summary>
    public int StepSize { get; }

    /// <summary>The solver grid, ascending: (i+1)·s − 1.</summary>
    public IReadOnlyList<int> Timesteps { get; }

    /// <summary>The first grid index of each segment, ascending (the first is 0).</summary>
    public IReadOnlyList<int> BoundaryIndices { get; }

    /// <summary>The timestep each segment's trajectories end at, one per segment, ascending.</summary>
    public IReadOnlyList<int> EndTimesteps { get; }

    /// <summary>The width of one segment in training timesteps (T / k): the range of the adversarial re-noising.</summary>
    public int SegmentLength => NumTrainTimesteps / Segments;

    public SegmentSchedule(int numTrainTimesteps, int solverSteps, int segments)
    {
        if (solverSteps < 1 || solverSteps > numTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(solverSteps),
                $"solver steps must be in [1, {numTrainTimesteps}] (num_train_timesteps), got {solverSteps}");
        if (segments < 1 || segments > solverSteps)
            throw new ArgumentOutOfRangeException(nameof(segments),
                $"segments must be in [1, {solverSteps}] (solver steps), got {segments}");
        NumTrainTimesteps = numTrainTimesteps;
        SolverSteps = solverSteps;
        Segments = segments;
        StepSize = numTrainTimesteps / solverSteps;
        Timesteps = Enumerable.Range(0, solverSteps).Select(i => (i + 1) * StepSize - 1).ToArray();
        // floor(j·N/k) in integers: what numpy's floor(linspace(0, N, k, endpoint=False)) means
        BoundaryIndices = Enumerable.Range(0, segments).Select(j => j * solverSteps / segments).ToArray();
        EndTimesteps = BoundaryIndices.Select(b => b == 0 ? 0 : Timesteps[b - 1]).ToArray();
    }

    /// <summary>The timestep the teacher's step from grid index <paramref name="gridIndex"/> reaches: t − s, floored at 0.</summary>
    public int PrevTimestep(int gridIndex) => Math.Max(Timesteps[Check(gridIndex)] - StepSize, 0);

    /// <summary>The segment holding grid index <paramref name="gridIndex"/>: the last boundary index not above it.</summary>
    public int SegmentOf(int gridIndex)
    {
        Check(gridIndex);
        int segment = 0;
        while (segment + 1 < Segments && BoundaryIndices[segment + 1] <= gridIndex) segment++;
        return segment;
    }

    /// <summary>The end timestep of the segment holding grid index <paramref name="gridIndex"/>.</summary>
    public int EndFor(int gridIndex) => EndTimesteps[SegmentOf(gridIndex)];

    /// <summary>Whether t − s is already the segment's end (the grid index is a boundary index), so the teacher's
    /// x_{t−s} is itself the target.</summary>
    public bool PrevIsOnBoundary(int gridIndex) => BoundaryIndices[SegmentOf(gridIndex)] == gridIndex;

    /// <summary><see cref="EndFor(int)"/> per sample (int64, on the indices' device).</summary>
    public Tensor EndFor(Tensor gridIndices) => Map(gridIndices, i => EndFor(i));

    /// <summary><see cref="PrevIsOnBoundary(int)"/> per sample (bool, on the indices' device).</summary>
    public Tensor PrevIsOnBoundary(Tensor gridIndices) => Map(gridIndices, i => PrevIsOnBoundary(i) ? 1 : 0).to(ScalarType.Bool);

    Tensor Map(Tensor gridIndices, Func<int, long> f)
    {
        using var cpu = gridIndices.to(ScalarType.Int64, CPU).flatten();
        var values = cpu.data<long>().Select(i => f(checked((int)i))).ToArray();
        return tensor(values, ScalarType.Int64, gridIndices.device);
    }

    int Check(int gridIndex) => gridIndex >= 0 && gridIndex < SolverSteps ? gridIndex
        : throw new ArgumentOutOfRangeException(nameof(gridIndex), $"grid index must be in [0, {SolverSteps}), got {gridIndex}");
}
