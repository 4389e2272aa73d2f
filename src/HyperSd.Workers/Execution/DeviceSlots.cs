using HyperSd.Workers.Hosting;

namespace HyperSd.Workers.Execution;

/// <summary>The process's compute devices; a stage holds one for its whole run, so each device runs one stage at a time.</summary>
public sealed class DeviceSlots(WorkerOptions options)
{
    readonly HashSet<string> busy = [];

    /// <summary>A free device, now held; null when all are busy.</summary>
    public string? TryAcquire()
    {
        lock (busy)
        {
            var free = options.Devices.FirstOrDefault(d => !busy.Contains(d));
            if (free is not null) busy.Add(free);
            return free;
        }
    }

    public void Release(string device)
    {
        lock (busy) busy.Remove(device);
    }
}
