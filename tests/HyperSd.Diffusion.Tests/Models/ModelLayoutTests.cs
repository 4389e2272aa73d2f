using HyperSd.Diffusion.Verification;
using Xunit.Abstractions;

namespace HyperSd.Diffusion.Tests.Models;

public class ModelLayoutTests(ITestOutputHelper output)
{
    [Fact]
    public void Full_size_SD15_and_SDXL_architectures_have_diffusers_keys_shapes_and_parameter_counts() =>
        Fixtures.AssertSuite<ModelLayoutSuite>(output);
}
