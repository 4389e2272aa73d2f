using HyperSd.Diffusion.Verification;
using Xunit.Abstractions;

namespace HyperSd.Diffusion.Tests.TextEncoders;

public class TextFixtureSuiteTests(ITestOutputHelper output)
{
    [Fact]
    public void Tokenizer_and_text_encoder_match_transformers() => Fixtures.AssertSuite<TextFixtureSuite>(output);

    [Fact]
    public void Full_size_sd15_text_encoder_has_the_reference_layout() => Fixtures.AssertSuite<TextEncoderLayoutSuite>(output);
}
