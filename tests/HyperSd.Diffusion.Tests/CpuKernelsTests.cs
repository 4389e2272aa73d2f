using HyperSd.Diffusion;
using Xunit;

namespace HyperSd.Diffusion.Tests;

public class CpuKernelsTests
{
    [Fact]
    public void Loading_the_library_switches_oneDNN_off_for_the_whole_process() => Assert.False(CpuKernels.MkldnnEnabled);

    /// <summary>On glibc, without its own malloc variables, the process runs with <see cref="NativeAllocator"/>'s settings.</summary>
    [Fact]
    public void Loading_the_library_tunes_glibcs_allocator()
    {
        string[] own = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"];
        bool ownSet = own.Any(v => Environment.GetEnvironmentVariable(v) is not null);
        Assert.Equal(OperatingSystem.IsLinux() && !ownSet, NativeAllocator.Tuned);
    }

    /// <summary>tests/test.runsettings starts the test processes with MALLOC_ARENA_MAX=1, as the launch profile and the worker
    /// image start theirs: the runner's threads then allocate from the heap NativeAllocator tunes, and nothing advises otherwise.
    /// </summary>
    [Fact]
    public void Test_processes_allocate_from_one_arena()
    {
        Assert.True(NativeAllocator.OneArena);
        Assert.Null(NativeAllocator.Advice);
    }
}
