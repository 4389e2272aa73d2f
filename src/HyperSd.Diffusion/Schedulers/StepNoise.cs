using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>The standard normal noise a stochastic step adds: the caller's (replayed draws) or a fresh draw, as
/// diffusers' randn_tensor makes it (on the generator's device, then moved to the sample's).</summary>
internal static class StepNoise
{
    public static Tensor Take(Tensor like, Generator? generator, Tensor? noise)
    {
        if (noise is null)
            return randn(like.shape, like.dtype, generator?.device ?? like.device, generator: generator).to(like.device);
        if (generator is not null)
            throw new ArgumentException("pass either a generator or the noise to replay, not both");
        if (!noise.shape.SequenceEqual(like.shape))
            throw new ArgumentException($"noise has shape [{string.Join(", ", noise.shape)}] but the model output has [{string.Join(", ", like.shape)}]", nameof(noise));
        return noise.to(like.dtype, like.device);
    }
}
