using HyperSd.Diffusion.Verification;
using Xunit.Abstractions;

namespace HyperSd.Diffusion.Tests.Models;

public class UNet2DConditionModelTests(ITestOutputHelper output)
{
    [Fact]
    public void SD15_topology_matches_diffusers() => Fixtures.AssertSuite<UnetSd15FixtureSuite>(output);

    [Fact]
    public void SDXL_topology_matches_diffusers() => Fixtures.AssertSuite<UnetSdxlFixtureSuite>(output);
}
