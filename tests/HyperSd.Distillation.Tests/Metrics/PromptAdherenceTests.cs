using HyperSd.Distillation.Metrics;
using HyperSd.Distillation.Tests.Toy;
using HyperSd.Distillation.Toy;
using Xunit.Abstractions;

namespace HyperSd.Distillation.Tests.Metrics;

[Collection(TrainedRecognizerCollection.Name)]
public sealed class PromptAdherenceTests(TrainedRecognizer trained, ITestOutputHelper output)
{
    [Fact]
    public void RealImagesFollowTheirOwnCaptionsAndNotShuffledOnes()
    {
        var (images, scenes) = ToyShapes.Generate(300, seed: 2024);
        using var _ = images;
        var captions = scenes.Select(s => s.Caption).ToArray();
        var shuffled = captions.ToArray();
        new Random(0).Shuffle(shuffled);
        double own = PromptAdherence.Score(trained.Model, images, captions);
        double other = PromptAdherence.Score(trained.Model, images, shuffled);
        double otherIgnoringSize = PromptAdherence.Score(trained.Model, images, shuffled, matchSize: false);
        output.WriteLine($"adherence: own captions {own:F3}, shuffled {other:F3} ({otherIgnoringSize:F3} ignoring size)");
        Assert.Equal(1.0, own);
        Assert.True(other < 0.3, $"adherence to shuffled captions {other}");
        Assert.True(otherIgnoringSize < 0.3, $"adherence to shuffled captions ignoring size {otherIgnoringSize}");
    }

    [Fact]
    public void MatchesExactlyTheRequestedObjects()
    {
        var seen = new ToyScene([new ToyObject(ToyShape.Circle, ToyColor.Red, ToyPosition.TopLeft, ToySize.Large),
            new ToyObject(ToyShape.Square, ToyColor.Blue, ToyPosition.Center, ToySize.Small)]);
        bool Matches(string prompt, bool matchSize = true) => PromptAdherence.Matches(ToyShapes.ParseCaption(prompt), seen, matchSize);
        Assert.True(Matches("a small blue square in the center and a large red circle at the top left"));
        Assert.True(Matches("a blue square in the center and a red circle at the top left")); // no size asked for
        Assert.False(Matches("a large blue square in the center and a large red circle at the top left"));
        Assert.True(Matches("a large blue square in the center and a large red circle at the top left", matchSize: false));
        Assert.False(Matches("a large red circle at the top left")); // the image shows an extra object
        Assert.False(Matches("a small blue square in the center and a large green circle at the top left"));
        Assert.False(Matches("a small blue square at the top right and a large red circle at the top left"));
        Assert.Throws<ArgumentException>(() => PromptAdherence.Score(["a red circle at the top left"], []));
    }
}
