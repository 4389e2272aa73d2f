using HyperSd.Diffusion.Models.Embeddings;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Models;

public class TimestepsTests
{
    [Fact]
    public void Embedding_is_cos_then_sin_of_geometric_frequencies_when_flipped()
    {
        using var proj = new Timesteps(6, flipSinToCos: true, downscaleFreqShift: 1);
        using var emb = proj.forward(tensor(new long[] { 0, 10 }));
        Assert.Equal([2, 6], emb.shape);
        // frequencies exp(−ln(10000)·i / (half − shift)) for i = 0..2, half = 3, shift = 1
        var freqs = Enumerable.Range(0, 3).Select(i => Math.Exp(-Math.Log(10000) * i / 2.0)).ToArray();
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(Math.Cos(10 * freqs[i]), emb[1, i].item<float>(), 5);
            Assert.Equal(Math.Sin(10 * freqs[i]), emb[1, i + 3].item<float>(), 5);
            Assert.Equal(1.0, emb[0, i].item<float>(), 6);
        }
    }

    [Fact]
    public void Odd_widths_are_zero_padded()
    {
        using var proj = new Timesteps(5, flipSinToCos: false, downscaleFreqShift: 0);
        using var emb = proj.forward(tensor(new[] { 3.5f }));
        Assert.Equal([1, 5], emb.shape);
        Assert.Equal(0f, emb[0, 4].item<float>());
        Assert.Equal(Math.Sin(3.5), emb[0, 0].item<float>(), 5);
    }
}
