using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>What LCMScheduler and TCDScheduler share in diffusers: inference timesteps picked evenly (by index) from
/// the distillation "origin grid" k−1, 2k−1, …, T−1 (k = T / original_inference_steps), or given outright, and a
/// step index that finds the next timestep.</summary>
public abstract class ConsistencyScheduler : DDPMScheduler, IScheduler
{
    private protected ConsistencyScheduler(SchedulerConfig config) : base(config)
    {
        Timesteps = TimestepSpacing.AllTrainTimesteps(config.NumTrainTimesteps);
        TimestepValues = Enumerable.Range(0, config.NumTrainTimesteps).Reverse().Select(t => (long)t).ToArray();
    }

    public Tensor Timesteps { get; private set; }
    public int? NumInferenceSteps { get; private set; }

    /// <summary>The index in <see cref="Timesteps"/> of the next step; found from the first step's timestep.</summary>
    public int? StepIndex { get; private protected set; }

    private protected long[] TimestepValues { get; private set; }

    public void SetTimesteps(int numInferenceSteps, Device? device = null) => SetTimesteps(numInferenceSteps, device, null);

    /// <summary>diffusers' <c>set_timesteps(num_inference_steps, original_inference_steps=…, strength=…)</c>.</summary>
    public void SetTimesteps(int numInferenceSteps, Device? device, int? originalInferenceSteps, double strength = 1.0)
    {
        int n = numInferenceSteps, T = NumTrainTimesteps;
        if (n < 1 || n > T)
            throw new ArgumentOutOfRangeException(
                nameof(numInferenceSteps), $"num_inference_steps must be between 1 and num_train_timesteps {T}, got {n}");
        var (grid, originalSteps) = OriginGrid(originalInferenceSteps, strength);
        if (grid.Length / n < 1)
            throw new ArgumentException($"original_inference_steps × strength = {originalSteps} × {strength} " +
                                        $"leaves {grid.Length} timesteps, " +
                                        $"fewer than num_inference_steps {n}; lower num_inference_steps or raise strength");
        if (n > originalSteps)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps),
                $"num_inference_steps {n} is larger than original_inference_steps {originalSteps}: the schedule is a subset of that grid");
        var descending = grid.Reverse().ToArray();
        double stride = descending.Length / (double)n;  // np.linspace(0, len, n, endpoint=False), floored
        Set(Enumerable.Range(0, n).Select(i => descending[(int)Math.Floor(i * stride)]).ToArray(), n, device);
    }

    /// <summary>Custom timesteps (diffusers' <c>set_timesteps(timesteps=[…])</c>, e.g. Hyper-SD's one step at 800);
    /// strength &lt; 1 drops the first ones, as img2img does.</summary>
    public void SetTimesteps(IReadOnlyList<long> timesteps, Device? device = null, double strength = 1.0)
    {
        if (timesteps.Count == 0) throw new ArgumentException("custom timesteps are empty", nameof(timesteps));
        for (int i = 1; i < timesteps.Count; i++)
            if (timesteps[i] >= timesteps[i - 1])
                throw new ArgumentException(
                    $"custom timesteps must be in descending order, got [{string.Join(", ", timesteps)}]", nameof(timesteps));
        if (timesteps[0] >= NumTrainTimesteps || timesteps[^1] < 0)
            throw new ArgumentOutOfRangeException(nameof(timesteps),
                $"custom timesteps must lie in [0, {NumTrainTimesteps - 1}], got [{string.Join(", ", timesteps)}]");
        int n = timesteps.Count;
        int start = Math.Max(n - Math.Min((int)(n * strength), n), 0);
        Set(timesteps.Skip(start).ToArray(), n, device);
    }

    /// <summary>The training/distillation timesteps that the inference schedule is picked from, ascending, and the
    /// original_inference_steps that bounds num_inference_steps.</summary>
    private protected virtual (long[] Grid, int OriginalSteps) OriginGrid(int? originalInferenceSteps, double strength)
    {
        int original = originalInferenceSteps ?? Config.OriginalInferenceSteps
            ?? throw new InvalidDataException($"{Config.Source}: original_inference_steps is null; {GetType().Name} needs it");
        if (original < 1 || original > NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(originalInferenceSteps),
                $"original_inference_steps must be between 1 and num_train_timesteps {NumTrainTimesteps}, got {original}");
        long k = NumTrainTimesteps / original;
        return (Enumerable.Range(1, (int)(original * strength)).Select(i => i * k - 1).ToArray(), original);
    }

    void Set(long[] timesteps, int numInferenceSteps, Device? device)
    {
        Timesteps = tensor(timesteps, int64, device).DetachFromDisposeScope();
        TimestepValues = timesteps;
        NumInferenceSteps = numInferenceSteps;
        StepIndex = null;
    }

    /// <summary>Checks that SetTimesteps ran and returns (num_inference_steps, this step's index).</summary>
    private protected (int Steps, int Index) BeginStep(double timestep) =>
        (NumInferenceSteps ?? throw new InvalidOperationException("call SetTimesteps before Step"),
         StepIndex ??= TimestepIndex.Of(Timesteps, timestep));

    public Tensor ScaleModelInput(Tensor sample, double timestep) => sample;

    public abstract SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, Generator? generator = null,
        Tensor? noise = null, IReadOnlyList<Generator>? generators = null);
}
