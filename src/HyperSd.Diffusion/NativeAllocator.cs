using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace HyperSd.Diffusion;

/// <summary>
/// glibc malloc settings for LibTorch's CPU tensors. By default glibc serves blocks over a moving threshold (from 128 KiB)
/// with mmap and gives them back at free, and trims the heap's top at 128 KiB: every step then maps, faults in (the kernel
/// zeroes each page) and unmaps its activations and im2col buffers again. Here no block is mapped (the threshold cannot
/// go above 32 MiB, and attention scores at batch 128 pass it) and the heap is trimmed only past 1 GiB. Measured with
/// <c>hypersd bench --preset toy --train-batch 32 --batches 64 128 256</c> on 2 cores: the toy UNet's forward at batch 64
/// took 320–390 ms by default and 160–230 ms tuned, at batch 256 1,405 ms with a 32 MiB threshold and 563 ms unmapped;
/// PCM's discriminator heads (forward and backward) 1.3–2.0 s and 0.5–0.8 s. Results are unchanged: only where memory
/// comes from moves. The price is resident memory held at its peak plus the pad.
/// A process started with any of glibc's own malloc variables (MALLOC_MMAP_THRESHOLD_, MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_,
/// MALLOC_TOP_PAD_, GLIBC_TUNABLES; empty counts) keeps glibc's behaviour.
/// </summary>
public static class NativeAllocator
{
    const int TrimThreshold = 1 << 30;
    const int TopPad = 256 << 20;

    /// <summary>Whether this process runs with the settings above.</summary>
    public static bool Tuned { get; private set; }

    /// <summary>Whether every thread allocates from the main heap (<c>MALLOC_ARENA_MAX=1</c> in the environment at start).
    /// glibc gives each thread that allocates first an arena of its own: a chain of 64 MiB mapped heaps, each unmapped when
    /// it empties, so a stage's tensor work on a worker thread faults its memory in again at every step. The limit must be
    /// set before the runtime starts its threads (a mallopt here comes too late for them), so the launch profiles, the test
    /// settings and the images set it. The README's main command with it: trajectories 62 → 27 s, evaluation 132 → 110 s
    /// (docs/results.md).</summary>
    public static bool OneArena => Environment.GetEnvironmentVariable(ArenaVariable) == "1";

    public const string ArenaVariable = "MALLOC_ARENA_MAX";

    /// <summary>Why tensor work runs slower here than it could, or null: said once at the start of a process that computes.</summary>
    public static string? Advice => OperatingSystem.IsLinux() && !OneArena
        ? $"{ArenaVariable}=1 is not set: tensor work on worker threads runs 2–3× slower (glibc's per-thread arenas map and unmap " +
          "their heaps at every step); set it in the environment before starting the process"
        : null;

    [ModuleInitializer]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255", Justification = "process-wide allocator setting")]
    internal static void Configure()
    {
        string[] own = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"];
        if (!OperatingSystem.IsLinux() || own.Any(v => Environment.GetEnvironmentVariable(v) is not null)) return;
        try
        {
            // M_TRIM_THRESHOLD -1, M_TOP_PAD -2, M_MMAP_MAX -4 (malloc.h; 0: never mmap); mallopt returns 1 when it took the value
            Tuned = mallopt(-4, 0) == 1 & mallopt(-1, TrimThreshold) == 1 & mallopt(-2, TopPad) == 1;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            // not glibc: its allocator keeps its defaults
        }
    }

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int mallopt(int param, int value);
}
