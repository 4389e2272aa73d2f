using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.Toy;

namespace HyperSd.Distillation.Tests.Rewards;

public sealed class ToyPreferencePairsTests
{
    [Theory]
    [InlineData(ToyCaptionSplit.Train)]
    [InlineData(ToyCaptionSplit.HeldOut)]
    public void The_better_scene_meets_strictly_more_requested_attributes(ToyCaptionSplit split)
    {
        var pairs = ToyPreferencePairs.Sample(new Random(11), 2000, split);
        foreach (var pair in pairs)
        {
            var requests = ToyShapes.ParseCaption(pair.Caption);
            Assert.Equal(split, ToyCaptions.SplitOf(pair.Caption));
            Assert.True(
                ToyPreferencePairs.MatchedAttributes(requests, pair.Better) > ToyPreferencePairs.MatchedAttributes(requests, pair.Worse),
                $"{pair.Caption}: better '{pair.Better}' is not better than '{pair.Worse}'");
            if (split == ToyCaptionSplit.Train) // nothing a reward trains on shows a held-out composition
                Assert.False(ToyCaptions.IsHeldOut(pair.Better) || ToyCaptions.IsHeldOut(pair.Worse), $"held-out scene in {pair}");
        }
        // the better scene is the caption's own one or has a mistake itself (train pairs lean to the former: a perturbed better
        // scene that is a held-out composition is redrawn); objects go missing and extra ones appear
        Assert.InRange(pairs.Count(p => p.Better.Caption == p.Caption), 800, 1400);
        Assert.Contains(pairs, p => p.Worse.Objects.Count < p.Better.Objects.Count);
        Assert.Contains(pairs, p => p.Worse.Objects.Count > p.Better.Objects.Count);
        Assert.Equal(pairs, ToyPreferencePairs.Sample(new Random(11), 2000, split)); // seeded
    }

    [Fact]
    public void Matched_attributes_count_shape_colour_size_and_empty_cells()
    {
        var requests = ToyShapes.ParseCaption("a large red circle at the top left and a blue square in the center");
        var exact = new ToyScene([new(ToyShape.Circle, ToyColor.Red, ToyPosition.TopLeft, ToySize.Large),
            new(ToyShape.Square, ToyColor.Blue, ToyPosition.Center, ToySize.Small)]);
        // 3 + 2 (size left open) + 3 empty cells
        Assert.Equal(8, ToyPreferencePairs.MatchedAttributes(requests, exact));
        var wrongColor = new ToyScene([exact.Objects[0] with { Color = ToyColor.Green }, exact.Objects[1]]);
        Assert.Equal(7, ToyPreferencePairs.MatchedAttributes(requests, wrongColor));
        var moved = new ToyScene([exact.Objects[0] with { Position = ToyPosition.BottomRight }, exact.Objects[1]]);
        Assert.Equal(4, ToyPreferencePairs.MatchedAttributes(requests, moved));
        Assert.Equal(3, ToyPreferencePairs.MatchedAttributes(requests, new ToyScene([])));
    }
}
