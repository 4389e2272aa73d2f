using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Verification;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Models;

public class AutoencoderKLTests(ITestOutputHelper output)
{
    [Fact]
    public void Encode_and_decode_match_diffusers() => Fixtures.AssertSuite<VaeFixtureSuite>(output);

    [Fact]
    public void Save_then_load_gives_identical_tensors()
    {
        using var vae = AutoencoderKL.FromPretrained(Fixtures.Path("vae_sd15"));
        var dir = Directory.CreateTempSubdirectory("hypersd-vae-").FullName;
        try
        {
            vae.SavePretrained(dir);
            using var reloaded = AutoencoderKL.FromPretrained(dir);
            Assert.Equal(vae.Config.ScalingFactor, reloaded.Config.ScalingFactor);
            Assert.Equal(vae.Config.BlockOutChannels, reloaded.Config.BlockOutChannels);
            var expected = vae.state_dict();
            var actual = reloaded.state_dict();
            Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
            foreach (var (key, tensor) in expected)
                Assert.True(tensor.eq(actual[key]).all().item<bool>(), key);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Posterior_samples_are_mean_plus_std_times_noise_and_reproducible()
    {
        using var moments = randn(2, 8, 4, 4) * 10;
        using var posterior = new DiagonalGaussianDistribution(moments);
        Assert.True(posterior.LogVar.max().item<float>() <= 20f && posterior.LogVar.min().item<float>() >= -30f);
        using var noise = randn(2, 4, 4, 4);
        using var sample = posterior.Sample(noise);
        Assert.True(sample.allclose(posterior.Mean + posterior.Std * noise));
        using var a = posterior.Sample(new Generator(7));
        using var b = posterior.Sample(new Generator(7));
        Assert.True(a.eq(b).all().item<bool>());
        Assert.Throws<ArgumentException>(() => posterior.Sample(randn(1, 4, 4, 4)));
    }

    [Fact]
    public void Unknown_block_type_names_the_config_field()
    {
        using var folder = new TempModelFolder("vae_sd15");
        folder.EditConfig(c => c["up_block_types"]![0] = "AttnUpDecoderBlock2D");
        var e = Assert.Throws<InvalidDataException>(() => AutoencoderKL.FromPretrained(folder.Dir));
        Assert.Contains("up_block_types[0]", e.Message);
        Assert.Contains("'AttnUpDecoderBlock2D'", e.Message);
        Assert.Contains("UpDecoderBlock2D", e.Message);
    }
}
