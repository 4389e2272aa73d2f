using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Toy;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Toy;

[Collection(GlobalRngCollection.Name)]
public sealed class ToyTextEncoderPretrainingTests(ITestOutputHelper output)
{
    [Fact]
    public void Object_tokens_are_the_last_word_of_each_objects_phrase()
    {
        var scene = new ToyScene([
            new ToyObject(ToyShape.Square, ToyColor.Green, ToyPosition.BottomRight, ToySize.Small),
            new ToyObject(ToyShape.Circle, ToyColor.Red, ToyPosition.Center, ToySize.Large)]);
        var tokenizer = ToyVocabulary.CreateTokenizer();
        var ids = tokenizer.Encode(scene.Caption);
        Assert.Equal([8, 16], ToyTextEncoderPretraining.ObjectTokens(scene));
        Assert.Equal(tokenizer.TokenIds("right").Single(), ids[8]);
        Assert.Equal(tokenizer.TokenIds("center").Single(), ids[16]);
        Assert.Equal(tokenizer.EosTokenId, ids[17]);
    }

    /// <summary>A short pretraining binds each object's attributes to its place on held-out two-object captions, where a
    /// linear probe of the same encoder untrained (random, frozen) reads back little more than the cell.</summary>
    [Fact]
    public void Pretraining_binds_attributes_to_their_place_where_a_random_encoder_does_not()
    {
        var tokenizer = ToyVocabulary.CreateTokenizer();
        var options = new ToyTextPretrainingOptions { Steps = 300, BatchSize = 64, Seed = 3 };
        ToyBindingAccuracy Run(bool probe)
        {
            manual_seed(3);
            using var encoder = new CLIPTextModel(ToyVocabulary.TextConfig(tokenizer));
            var two = ToyTextEncoderPretraining.Train(encoder, tokenizer, options with { Probe = probe }).Single(a => a.Objects == 2);
            output.WriteLine($"{(probe ? "random encoder, probe" : "pretrained")}: {two}");
            return two;
        }
        var random = Run(probe: true);
        var pretrained = Run(probe: false);
        Assert.True(pretrained.Whole > 0.9, $"pretrained encoder: whole-object read-out {pretrained.Whole:F3}, expected > 0.9");
        Assert.True(random.Color < 0.6, $"random encoder: colour read-out {random.Color:F3}, expected < 0.6");
    }
}
