using HyperSd.Diffusion.Verification;
using Xunit.Abstractions;

namespace HyperSd.Diffusion.Tests.Models;

public class AutoencoderKLTests(ITestOutputHelper output)
{
    [Fact]
    public void Encode_and_decode_match_diffusers() => Fixtures.AssertSuite<VaeFixtureSuite>(output);
}
