using HyperSd.Diffusion;
using Xunit;

namespace HyperSd.Diffusion.Tests;

public class CpuKernelsTests
{
    [Fact]
    public void Loading_the_library_switches_oneDNN_off_for_the_whole_process() => Assert.False(CpuKernels.MkldnnEnabled);
}
