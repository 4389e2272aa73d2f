using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Metrics;

/// <summary>
/// Toy prompt adherence: the share of images that show exactly what their prompt asks for, as the
/// <see cref="ToyRecognizer"/> sees them: every requested object with its shape, colour and position (and size, when
/// <c>matchSize</c> and the prompt names one), and no other object.
/// </summary>
public static class PromptAdherence
{
    public static bool Matches(IReadOnlyList<ToyRequest> requested, ToyScene seen, bool matchSize = true) =>
        requested.Count == seen.Objects.Count && requested.All(r => seen.Objects.Any(o => r.IsMetBy(o, matchSize)));

    /// <summary>Adherence of recognised scenes to their prompts (parsed with <see cref="ToyShapes.ParseCaption"/>).</summary>
    public static double Score(IReadOnlyList<string> prompts, IReadOnlyList<ToyScene> seen, bool matchSize = true)
    {
        if (prompts.Count != seen.Count || prompts.Count == 0)
            throw new ArgumentException("expected one recognised scene per prompt and at least one prompt, " +
                                        $"got {prompts.Count} prompts and {seen.Count} scenes");
        return prompts.Zip(seen).Count(p => Matches(ToyShapes.ParseCaption(p.First), p.Second, matchSize)) / (double)prompts.Count;
    }

    /// <summary>Adherence of images [N, 3, 32, 32] in [0, 1] to their prompts.</summary>
    public static double Score(ToyRecognizer recognizer, Tensor images, IReadOnlyList<string> prompts, bool matchSize = true)
    {
        if (images.shape[0] != prompts.Count)
            throw new ArgumentException($"expected one prompt per image, got {images.shape[0]} images and {prompts.Count} prompts");
        return Score(prompts, recognizer.Recognize(images), matchSize);
    }
}
