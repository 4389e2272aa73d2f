using HyperSd.Services.Hosting;

namespace HyperSd.Services.Execution;

/// <summary>The process's compute devices; a stage holds one slot for its whole run. A device listed n times has n
/// slots (["cpu", "cpu"]: two CPU stages at a time), so each slot runs one stage at a time.</summary>
public sealed class DeviceSlots(WorkerOptions options)
{
    readonly Dictionary<string, int> busy = [];
    readonly SemaphoreSlim freed = new(0);

    /// <summary>A free slot's device, now held; null when all are busy.</summary>
    public string? TryAcquire()
    {
        lock (busy)
        {
            var free = options.Devices.Distinct().FirstOrDefault(d => busy.GetValueOrDefault(d) < options.Devices.Count(x => x == d));
            if (free is not null) busy[free] = busy.GetValueOrDefault(free) + 1;
            return free;
        }
    }

    /// <summary>A free slot's device, waiting for one to be released.</summary>
    public async Task<string> AcquireAsync(CancellationToken ct)
    {
        while (true)
        {
            if (TryAcquire() is { } device) return device;
            // a release signals; the timeout covers a signal consumed by another waiter
            await freed.WaitAsync(TimeSpan.FromMilliseconds(250), ct);
        }
    }

    public void Release(string device)
    {
        lock (busy)
            if (busy.GetValueOrDefault(device) > 0) busy[device]--;
        freed.Release();
    }
}
