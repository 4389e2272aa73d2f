using HyperSd.Diffusion.Verification;
using Xunit.Abstractions;

namespace HyperSd.Diffusion.Tests.Lora;

public class LoraFixtureTests(ITestOutputHelper output)
{
    [Fact]
    public void Kohya_lora_fused_and_attached_matches_diffusers() => Fixtures.AssertSuite<LoraFixtureSuite>(output);
}
