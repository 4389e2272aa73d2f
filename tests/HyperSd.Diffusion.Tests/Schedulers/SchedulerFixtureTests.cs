using HyperSd.Diffusion.Verification;
using Xunit.Abstractions;

namespace HyperSd.Diffusion.Tests.Schedulers;

public class SchedulerFixtureTests(ITestOutputHelper output)
{
    [Fact]
    public void Schedulers_match_diffusers_chains() => Fixtures.AssertSuite<SchedulerFixtureSuite>(output);
}
