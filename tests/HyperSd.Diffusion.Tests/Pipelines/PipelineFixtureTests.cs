using HyperSd.Diffusion.Verification;
using Xunit.Abstractions;

namespace HyperSd.Diffusion.Tests.Pipelines;

public class PipelineFixtureTests(ITestOutputHelper output)
{
    [Fact]
    public void Whole_pipeline_matches_diffusers_for_every_case() => Fixtures.AssertSuite<PipelineFixtureSuite>(output);
}
