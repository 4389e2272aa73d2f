using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace HyperSd.Diffusion;

/// <summary>
/// glibc malloc settings for LibTorch's CPU tensors. By default glibc serves blocks over a moving threshold (from 128 KiB)
/// with mmap and gives them back at free, and trims the heap's top at 128 KiB: every step then maps, faults in (the kernel
/// zeroes each page) and unmaps its activations and im2col buffers again. Measured with <c>hypersd bench --preset toy
/// --train-batch 32</c> on 2 cores: the toy UNet's forward at batch 64 took 320–390 ms by default and 160–210 ms with these
/// settings; PCM's discriminator heads (forward and backward) 1.3–2.0 s and 0.7–0.8 s. Results are unchanged: only where
/// memory comes from moves. The price is resident memory held at its peak plus the pad.
/// A process started with any of glibc's own malloc variables (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_,
/// MALLOC_TOP_PAD_, GLIBC_TUNABLES; empty counts) keeps glibc's behaviour.
/// </summary>
public static class NativeAllocator
{
    const int MmapThreshold = 32 << 20; // glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit): blocks above it are still mapped
    const int TrimThreshold = 1 << 30;
    const int TopPad = 256 << 20;

    /// <summary>Whether this process runs with the settings above.</summary>
    public static bool Tuned { get; private set; }

    [ModuleInitializer]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255", Justification = "process-wide allocator setting")]
    internal static void Configure()
    {
        string[] own = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"];
        if (!OperatingSystem.IsLinux() || own.Any(v => Environment.GetEnvironmentVariable(v) is not null)) return;
        try
        {
            // M_TRIM_THRESHOLD -1, M_TOP_PAD -2, M_MMAP_THRESHOLD -3 (malloc.h); mallopt returns 1 when it took the value
            Tuned = mallopt(-3, MmapThreshold) == 1 & mallopt(-1, TrimThreshold) == 1 & mallopt(-2, TopPad) == 1;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            // not glibc: its allocator keeps its defaults
        }
    }

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int mallopt(int param, int value);
}
