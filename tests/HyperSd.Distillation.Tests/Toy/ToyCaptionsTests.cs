using HyperSd.Distillation.Toy;

namespace HyperSd.Distillation.Tests.Toy;

public sealed class ToyCaptionsTests
{
    [Fact]
    public void The_split_is_disjoint_and_covers_the_caption_space()
    {
        var train = ToyCaptions.All(ToyCaptionSplit.Train);
        var heldOut = ToyCaptions.All(ToyCaptionSplit.HeldOut);
        var all = ToyCaptions.AllScenes().Select(s => s.Caption).ToList();
        Assert.Equal(120 + 11_520, all.Count);
        Assert.Equal(all.Count, all.Distinct().Count());
        Assert.Empty(train.Intersect(heldOut));
        Assert.Equal(all.OrderBy(c => c, StringComparer.Ordinal), train.Concat(heldOut).OrderBy(c => c, StringComparer.Ordinal));
        // the documented sizes: 24 of 120 one-object captions, 5,048 of 11,520 two-object ones
        Assert.Equal((24, 5_048), (heldOut.Count(c => !c.Contains(" and ")), heldOut.Count(c => c.Contains(" and "))));
        Assert.All(heldOut, c => Assert.True(ToyCaptions.IsHeldOut(c), c));
        Assert.All(train, c => Assert.False(ToyCaptions.IsHeldOut(c), c));
    }

    [Fact]
    public void Held_out_compositions_are_whole_and_made_of_seen_parts()
    {
        // a held-out placement is held out with either size, in either phrase, and with no size word at all
        Assert.True(ToyCaptions.IsHeldOut("a red circle at the top left"));
        Assert.True(ToyCaptions.IsHeldOut("a small blue square at the top right and a large red circle at the top left"));
        Assert.False(ToyCaptions.IsHeldOut("a large red circle at the top right"));
        // a held-out pair of placements is held out in both orders and with every size
        var pair = ToyCaptions.All(ToyCaptionSplit.HeldOut).Select(ToyShapes.ParseCaption)
            .First(r => r.Count == 2 && r.All(o => !ToyCaptions.IsHeldOutPlacement(o.Shape, o.Color, o.Position)));
        foreach (var (a, b) in new[] { (pair[0], pair[1]), (pair[1], pair[0]) })
            foreach (var sizes in new[] { (ToySize.Small, ToySize.Large), (ToySize.Large, ToySize.Small), (ToySize.Large, ToySize.Large) })
                Assert.True(ToyCaptions.IsHeldOut(new ToyScene([new ToyObject(a.Shape, a.Color, a.Position, sizes.Item1),
                    new ToyObject(b.Shape, b.Color, b.Position, sizes.Item2)])));

        // training still shows every shape–colour pair (at four of five cells) and every shape, colour and size in every cell
        var trainObjects = ToyCaptions.All(ToyCaptionSplit.Train).SelectMany(ToyShapes.ParseCaption).ToList();
        foreach (var shape in Enum.GetValues<ToyShape>())
            foreach (var color in Enum.GetValues<ToyColor>())
                Assert.Equal(4, trainObjects.Where(o => o.Shape == shape && o.Color == color).Select(o => o.Position).Distinct().Count());
        foreach (var position in Enum.GetValues<ToyPosition>())
        {
            var here = trainObjects.Where(o => o.Position == position).ToList();
            Assert.Equal(3, here.Select(o => o.Shape).Distinct().Count());
            Assert.Equal(4, here.Select(o => o.Color).Distinct().Count());
            Assert.Equal(2, here.Select(o => o.Size).Distinct().Count());
        }
    }

    [Fact]
    public void Scenes_are_drawn_from_the_asked_split_with_one_and_two_objects()
    {
        var train = ToyShapes.RandomScenes(2000, seed: 11, ToyCaptionSplit.Train);
        var heldOut = ToyShapes.RandomScenes(2000, seed: 11, ToyCaptionSplit.HeldOut);
        Assert.All(train, s => Assert.Equal(ToyCaptionSplit.Train, ToyCaptions.SplitOf(s)));
        Assert.All(heldOut, s => Assert.Equal(ToyCaptionSplit.HeldOut, ToyCaptions.SplitOf(s)));
        foreach (var scenes in new[] { train, heldOut })
            Assert.InRange(scenes.Count(s => s.Objects.Count == 1), 900, 1100); // the object count is drawn before the split
        // the whole space, as the recognizer trains on, has both
        var any = ToyShapes.RandomScenes(2000, seed: 11);
        Assert.Contains(any, ToyCaptions.IsHeldOut);
        Assert.Contains(any, s => !ToyCaptions.IsHeldOut(s));
    }

    [Fact]
    public void Evaluation_prompts_are_held_out_by_default_and_seen_on_request()
    {
        var prompts = ToyWorld.EvaluationPrompts(256);
        Assert.All(prompts, p => Assert.True(ToyCaptions.IsHeldOut(p), p));
        Assert.Contains(prompts, p => p.Contains(" and "));
        Assert.Contains(prompts, p => !p.Contains(" and "));
        Assert.All(ToyWorld.EvaluationPrompts(256, split: ToyCaptionSplit.Train), p => Assert.False(ToyCaptions.IsHeldOut(p), p));
        var two = ToyWorld.EvaluationPrompts(64, objects: 2, seed: 5, ToyCaptionSplit.HeldOut);
        Assert.All(two, p => Assert.True(ToyCaptions.IsHeldOut(p) && ToyShapes.ParseCaption(p).Count == 2, p));
    }
}
