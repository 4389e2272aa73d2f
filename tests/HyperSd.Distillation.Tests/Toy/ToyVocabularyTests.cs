using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Toy;

namespace HyperSd.Distillation.Tests.Toy;

public sealed class ToyVocabularyTests
{
    static readonly CLIPTokenizer Tokenizer = ToyVocabulary.CreateTokenizer();

    [Fact]
    public void EveryCaptionWordIsOneToken()
    {
        var ids = new HashSet<int>();
        foreach (var word in ToyShapes.CaptionWords)
        {
            var tokenIds = Tokenizer.TokenIds(word);
            Assert.True(tokenIds.Count == 1, $"'{word}' → [{string.Join(", ", Tokenizer.Tokenize(word))}]");
            Assert.NotEqual(Tokenizer.UnkTokenId, tokenIds[0]);
            ids.Add(tokenIds[0]);
        }
        Assert.Equal(ToyShapes.CaptionWords.Count, ids.Count);
        foreach (var scene in ToyShapes.RandomScenes(50, seed: 2))
            Assert.Equal(scene.Caption.Split(' ').Length, Tokenizer.TokenIds(scene.Caption).Count);
    }

    [Fact]
    public void TokenisationIsStableAndSurvivesSaving()
    {
        var dir = Directory.CreateTempSubdirectory("toy-tokenizer").FullName;
        try
        {
            ToyVocabulary.Save(dir);
            var loaded = CLIPTokenizer.FromPretrained(dir);
            var again = ToyVocabulary.CreateTokenizer();
            Assert.Equal(Tokenizer.VocabSize, loaded.VocabSize);
            foreach (var caption in ToyShapes.RandomScenes(50, seed: 4).Select(s => s.Caption))
            {
                Assert.Equal(Tokenizer.Encode(caption), again.Encode(caption));
                Assert.Equal(Tokenizer.Encode(caption), loaded.Encode(caption));
            }
            Assert.Equal(Tokenizer.VocabSize - 2, Tokenizer.BosTokenId);
            Assert.Equal(Tokenizer.VocabSize - 1, Tokenizer.EosTokenId);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void AnyTextTokenisesWithoutUnknownTokens()
    {
        var ids = Tokenizer.TokenIds("Hello, Wörld! A PURPLE hexagon; 42 × ∞ 🙂\ttabs\u00A0and\u0001control");
        Assert.NotEmpty(ids);
        Assert.DoesNotContain(Tokenizer.UnkTokenId, ids);
    }

    [Fact]
    public void TextConfigBuildsATinyTextEncoder()
    {
        var config = ToyVocabulary.TextConfig(Tokenizer);
        Assert.Equal(Tokenizer.VocabSize, config.VocabSize);
        Assert.Equal(Tokenizer.EosTokenId, config.EosTokenId);
        using var model = new CLIPTextModel(config);
        using var ids = Tokenizer.Encode(["a large red circle at the top left", "a small blue square in the center"]);
        using var _ = TorchSharp.torch.no_grad();
        var output = model.call(ids);
        Assert.Equal([2L, 77, 32], output.LastHiddenState.shape);
    }
}
