using HyperSd.Distillation.Toy;

namespace HyperSd.Distillation.Tests.Toy;

public sealed class ToyAdherenceTests
{
    static ToyObject O(ToyShape shape, ToyColor color, ToyPosition position, ToySize size) => new(shape, color, position, size);

    [Fact]
    public void Score_counts_attributes_per_object_and_tells_swapped_from_wrong()
    {
        var asked = new ToyScene([
            O(ToyShape.Circle, ToyColor.Red, ToyPosition.TopLeft, ToySize.Small),
            O(ToyShape.Square, ToyColor.Blue, ToyPosition.BottomRight, ToySize.Large)]);
        string prompt = asked.Caption;
        var seen = new List<ToyScene>
        {
            asked, // right
            // the colours bound to the wrong objects: both swapped
            new([O(ToyShape.Circle, ToyColor.Blue, ToyPosition.TopLeft, ToySize.Small),
                 O(ToyShape.Square, ToyColor.Red, ToyPosition.BottomRight, ToySize.Large)]),
            // a wrong shape that neither object asked for, and an object missing
            new([O(ToyShape.Triangle, ToyColor.Red, ToyPosition.TopLeft, ToySize.Small)]),
            // the second object drawn with the first one's shape and size
            new([O(ToyShape.Circle, ToyColor.Red, ToyPosition.TopLeft, ToySize.Small),
                 O(ToyShape.Circle, ToyColor.Blue, ToyPosition.BottomRight, ToySize.Small)]),
        };
        var row = ToyAdherence.Score(ToyCaptionSplit.HeldOut, 2, Enumerable.Repeat(prompt, 4).ToList(), seen);

        Assert.Equal(1 / 4.0, row.Strict);
        Assert.Equal(3 / 4.0, row.CountRight);
        // 8 requested objects, 7 placed
        Assert.Equal(7 / 8.0, row.Placed);
        Assert.Equal(5 / 8.0, row.Shape);
        Assert.Equal(5 / 8.0, row.Color);
        Assert.Equal(6 / 8.0, row.Size);
        Assert.Equal(3 / 8.0, row.WholeObject);
        Assert.Equal(1 / 8.0, row.ShapeSwapped); // the triangle is wrong, not swapped
        Assert.Equal(2 / 8.0, row.ColorSwapped);
    }

    [Fact]
    public void One_object_prompts_have_nothing_to_swap()
    {
        var asked = new ToyScene([O(ToyShape.Circle, ToyColor.Red, ToyPosition.Center, ToySize.Large)]);
        var seen = new ToyScene([O(ToyShape.Square, ToyColor.Green, ToyPosition.Center, ToySize.Large)]);
        var row = ToyAdherence.Score(ToyCaptionSplit.Train, 1, [asked.Caption], [seen]);
        Assert.Equal((0.0, 0.0, 1.0, 0.0, 0.0), (row.Shape, row.Color, row.Placed, row.ShapeSwapped, row.ColorSwapped));
    }

    [Fact]
    public void Score_rejects_a_scene_count_that_does_not_match_the_prompts()
    {
        var scene = new ToyScene([O(ToyShape.Circle, ToyColor.Red, ToyPosition.Center, ToySize.Large)]);
        var error = Assert.Throws<ArgumentException>(() =>
            ToyAdherence.Score(ToyCaptionSplit.Train, 1, [scene.Caption, scene.Caption], [scene]));
        Assert.Contains("got 2 and 1", error.Message);
    }
}
