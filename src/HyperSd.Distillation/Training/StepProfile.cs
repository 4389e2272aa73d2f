using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Training;

/// <summary>
/// Where a training loop's wall time goes: each <see cref="Mark"/> ends the current phase and charges its time to the
/// phase named, summed over the steps. On the CPU LibTorch's operations are synchronous, so a mark costs a clock read; on
/// CUDA kernels run asynchronously, so each mark first waits for the device (a few waits a step).
/// </summary>
public sealed class StepProfile(Device device)
{
    readonly Dictionary<string, double> seconds = [];
    long last = Stopwatch.GetTimestamp();

    /// <summary>Starts the first phase now.</summary>
    public void Start()
    {
        Sync();
        last = Stopwatch.GetTimestamp();
    }

    public void Mark(string phase)
    {
        Sync();
        long now = Stopwatch.GetTimestamp();
        seconds[phase] = seconds.GetValueOrDefault(phase) + Stopwatch.GetElapsedTime(last, now).TotalSeconds;
        last = now;
    }

    /// <summary>Mean seconds per step of each phase over <paramref name="steps"/> steps, in the order first marked.</summary>
    public Dictionary<string, double> PerStep(int steps) =>
        seconds.ToDictionary(p => p.Key, p => steps > 0 ? p.Value / steps : 0);

    void Sync()
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }
}
