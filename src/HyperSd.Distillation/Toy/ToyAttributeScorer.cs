using HyperSd.Distillation.Evaluation;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Toy;

/// <summary>
/// Where prompt following fails, per image: the share of the requested objects that the recognizer finds at their
/// position ("object-placed"), and with the right shape, colour or size there. Their means (with Student's t intervals)
/// are the per-attribute breakdown of <c>hypersd evaluate --breakdown</c>.
/// </summary>
public sealed class ToyAttributeScorer(ToyRecognizer recognizer, string attribute, Func<ToyRequest, ToyObject, bool> right)
    : IImageScorer
{
    public string Name => $"object-{attribute}";

    public static IReadOnlyList<IImageScorer> All(ToyRecognizer recognizer) =>
    [
        new ToyAttributeScorer(recognizer, "placed", (_, _) => true),
        new ToyAttributeScorer(recognizer, "shape", (r, o) => o.Shape == r.Shape),
        new ToyAttributeScorer(recognizer, "color", (r, o) => o.Color == r.Color),
        new ToyAttributeScorer(recognizer, "size", (r, o) => r.Size is null || o.Size == r.Size),
    ];

    public Tensor Score(IReadOnlyList<string> prompts, Tensor images)
    {
        using var _ = no_grad();
        var seen = recognizer.Recognize(images);
        var scores = prompts.Select((p, i) =>
        {
            var requests = ToyShapes.ParseCaption(p);
            return requests.Average(r => seen[i].Objects.FirstOrDefault(o => o.Position == r.Position) is { } there && right(r, there)
                ? 1.0 : 0.0);
        }).ToArray();
        return tensor(scores, float64);
    }
}
