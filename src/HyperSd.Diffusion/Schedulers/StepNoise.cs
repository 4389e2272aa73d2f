using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>The standard normal noise a stochastic step adds: the caller's (replayed draws) or a fresh draw, as
/// diffusers' randn_tensor makes it (on the generator's device, then moved to the sample's).</summary>
internal static class StepNoise
{
    public static Tensor Take(Tensor like, Generator? generator, Tensor? noise, IReadOnlyList<Generator>? generators = null)
    {
        if (generators is not null)
        {
            // One generator per sample, as diffusers' randn_tensor does with a list of generators.
            if (generators.Count != like.shape[0] || generator is not null || noise is not null)
                throw new ArgumentException(
                    $"pass one generator per sample ({like.shape[0]}), and not also a generator or noise; got {generators.Count}");
            using var scope = NewDisposeScope();
            return stack(generators.Select(g => randn(like.shape[1..], like.dtype, g.device, generator: g)))
                .to(like.device).MoveToOuterDisposeScope();
        }
        if (noise is null)
            return randn(like.shape, like.dtype, generator?.device ?? like.device, generator: generator).to(like.device);
        if (generator is not null)
            throw new ArgumentException("pass either a generator or the noise to replay, not both");
        if (!noise.shape.SequenceEqual(like.shape))
            throw new ArgumentException(
                $"noise has shape [{string.Join(", ", noise.shape)}] but the model output has [{string.Join(", ", like.shape)}]",
                nameof(noise));
        return noise.to(like.dtype, like.device);
    }
}
