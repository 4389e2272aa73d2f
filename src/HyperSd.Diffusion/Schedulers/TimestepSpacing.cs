using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>The inference timesteps of <c>timestep_spacing</c> (Table 2 of arXiv 2305.08891), computed with numpy's
/// float64 arithmetic as diffusers does, so rounding ties fall the same way.</summary>
public static class TimestepSpacing
{
    /// <summary>Highest first. "leading": multiples of ⌊T/n⌋ plus steps_offset; "trailing": round(T − i·T/n) − 1;
    /// "linspace": n points from 0 to T − 1, not rounded (DDIM rounds them, Euler keeps them fractional).</summary>
    public static double[] Compute(SchedulerConfig config, int numInferenceSteps)
    {
        int T = config.NumTrainTimesteps, n = numInferenceSteps;
        if (n < 1 || n > T)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps),
                $"num_inference_steps must be between 1 and num_train_timesteps {T}, got {n}");
        config.Require("timestep_spacing", config.TimestepSpacing, SchedulerConfig.TimestepSpacings);
        return config.TimestepSpacing switch
        {
            "leading" => Enumerable.Range(0, n).Reverse().Select(i => (double)(i * (T / n) + config.StepsOffset)).ToArray(),
            "trailing" => NumpyArange(T, 0, -(double)T / n).Select(t => Math.Round(t) - 1).ToArray(),
            _ => NumpyLinspace(0, T - 1, n).Reverse().ToArray(),
        };
    }

    /// <summary>Every training timestep, highest first (a scheduler's timesteps before SetTimesteps).</summary>
    public static Tensor AllTrainTimesteps(int numTrainTimesteps)
    {
        using var scope = NewDisposeScope();
        return arange(numTrainTimesteps - 1, -1, -1, int64).DetachFromDisposeScope();
    }

    /// <summary>numpy.arange for floats: ⌈(stop − start)/step⌉ values start + i·δ, δ taken from the first two values.</summary>
    static double[] NumpyArange(double start, double stop, double step)
    {
        long count = Math.Max(0, (long)Math.Ceiling((stop - start) / step));
        double delta = start + step - start;
        return Enumerable.Range(0, (int)count).Select(i => i == 1 ? start + step : start + i * delta).ToArray();
    }

    /// <summary>numpy.linspace with its endpoint: start + i·step, the last value exactly stop.</summary>
    static double[] NumpyLinspace(double start, double stop, int num)
    {
        if (num == 1) return [start];
        double step = (stop - start) / (num - 1);
        return Enumerable.Range(0, num).Select(i => i == num - 1 ? stop : i * step + start).ToArray();
    }
}
