using HyperSd.Distillation.Toy;

namespace HyperSd.Distillation.Tests.Toy;

public sealed class ToyShapesTests
{
    [Fact]
    public void SameSeedGivesSameImagesAndScenes()
    {
        var (a, scenesA) = ToyShapes.Generate(64, seed: 3);
        var (b, scenesB) = ToyShapes.Generate(64, seed: 3);
        var (c, scenesC) = ToyShapes.Generate(64, seed: 4);
        using var _ = a; using var __ = b; using var ___ = c;
        Assert.Equal(scenesA, scenesB);
        Assert.True(a.eq(b).all().item<bool>());
        Assert.NotEqual(scenesA, scenesC);
        Assert.False(a.eq(c).all().item<bool>());
    }

    [Fact]
    public void ImagesHoldOneOrTwoObjectsInDistinctCells()
    {
        var (images, scenes) = ToyShapes.Generate(500, seed: 5);
        using var _ = images;
        Assert.Equal([500L, 3, ToyShapes.Resolution, ToyShapes.Resolution], images.shape);
        Assert.Equal(TorchSharp.torch.ScalarType.Float32, images.dtype);
        Assert.True(images.min().item<float>() >= 0 && images.max().item<float>() <= 1);
        Assert.All(scenes, s => Assert.InRange(s.Objects.Count, 1, 2));
        Assert.All(scenes, s => Assert.Equal(s.Objects.Count, s.Objects.Select(o => o.Position).Distinct().Count()));
        Assert.Contains(scenes, s => s.Objects.Count == 1);
        Assert.Contains(scenes, s => s.Objects.Count == 2);
        // the border stays background
        foreach (var line in new[] { 0, 31 })
        {
            Assert.Equal(0f, images[.., .., line, ..].abs().max().item<float>());
            Assert.Equal(0f, images[.., .., .., line].abs().max().item<float>());
        }
    }

    [Fact]
    public void DrawsTheColourAtTheCellCentre()
    {
        var scene = new ToyScene([new ToyObject(ToyShape.Square, ToyColor.Blue, ToyPosition.BottomRight, ToySize.Small),
            new ToyObject(ToyShape.Circle, ToyColor.Red, ToyPosition.Center, ToySize.Large)]);
        using var image = ToyShapes.Render([scene]);
        float[] Pixel(int y, int x) => image[0, .., y, x].data<float>().ToArray();
        Assert.True(Pixel(26, 26)[2] > 0.9f && Pixel(26, 26)[0] < 0.2f, "blue square at the bottom right");
        Assert.True(Pixel(16, 16)[0] > 0.9f && Pixel(16, 16)[2] < 0.2f, "red circle in the center");
        Assert.Equal(0f, image[0, .., 0..10, 0..10].abs().max().item<float>()); // top-left cell is empty
        Assert.Equal("a small blue square at the bottom right and a large red circle in the center", scene.Caption);
    }

    [Fact]
    public void LabelsAndCaptionsRoundTrip()
    {
        foreach (var scene in ToyShapes.RandomScenes(200, seed: 9))
        {
            Assert.Equal(scene.Objects, ToyScene.FromJson(scene.ToJson()).Objects); // order kept, as the caption depends on it
            var requests = ToyShapes.ParseCaption(scene.Caption);
            Assert.Equal(scene.Objects.Select(o => new ToyRequest(o.Shape, o.Color, o.Position, o.Size)), requests);
        }
        var one = new ToyScene([new ToyObject(ToyShape.Triangle, ToyColor.Yellow, ToyPosition.TopLeft, ToySize.Large)]);
        Assert.Equal("""{"objects":[{"shape":"triangle","color":"yellow","position":"top_left","size":"large"}]}""", one.ToJson());
    }

    [Fact]
    public void ParsesPromptsWithoutSizeAndRejectsOthers()
    {
        Assert.Equal([new ToyRequest(ToyShape.Circle, ToyColor.Red, ToyPosition.TopLeft, null)], ToyShapes.ParseCaption("A red  circle at the top left."));
        var e = Assert.Throws<FormatException>(() => ToyShapes.ParseCaption("a purple circle at the top left"));
        Assert.Contains("a purple circle at the top left", e.Message);
        Assert.Throws<FormatException>(() => ToyShapes.ParseCaption("a red circle in the center and a blue square in the center"));
        Assert.Throws<InvalidDataException>(() => ToyScene.FromJson("""{"objects":[{"shape":"hexagon","color":"red","position":"center","size":"small"}]}"""));
        Assert.Throws<InvalidDataException>(() => ToyScene.FromJson("{}"));
    }
}
