using HyperSd.Diffusion.Models.Autoencoders;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Models;

public class PixelUnshuffleAutoencoderTests
{
    [Fact]
    public void Encode_then_decode_is_exact_and_saved_config_loads_back()
    {
        var ae = new PixelUnshuffleAutoencoder(new() { Factor = 4, ScalingFactor = 1.5, ShiftFactor = -0.5 });
        var images = rand(2, 3, 32, 32);
        var latents = ae.EncodeLatents(images);
        Assert.Equal(new long[] { 2, 48, 8, 8 }, latents.shape);
        Assert.True(ae.DecodeLatents(latents).allclose(images, atol: 1e-6));
        var dir = Directory.CreateTempSubdirectory("ae-").FullName;
        try
        {
            ae.SavePretrained(dir);
            var back = Assert.IsType<PixelUnshuffleAutoencoder>(Autoencoders.FromPretrained(dir));
            Assert.Equal(ae.Config, back.Config);
        }
        finally { Directory.Delete(dir, true); }
    }
}
