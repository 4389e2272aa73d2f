using HyperSd.Diffusion.TextEncoders;

namespace HyperSd.Diffusion.Tests.TextEncoders;

public class CLIPTokenizerTests : IDisposable
{
    static readonly string TokenizerDir = Fixtures.Path("text_sd15", "tokenizer");
    readonly string dir = Directory.CreateTempSubdirectory("tok-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    [Fact]
    public void Over_long_prompt_is_truncated_to_max_length_keeping_bos_and_eos()
    {
        var tokenizer = CLIPTokenizer.FromPretrained(TokenizerDir);
        var prompt = string.Join(" ", Enumerable.Repeat("red circle", 100));
        var ids = tokenizer.Encode(prompt);
        Assert.Equal(77, ids.Length);
        Assert.Equal(tokenizer.BosTokenId, ids[0]);
        Assert.Equal(tokenizer.EosTokenId, ids[^1]);
        Assert.Equal(tokenizer.TokenIds(prompt).Take(75), ids[1..^1]);
    }

    [Fact]
    public void Batch_encoding_is_int64_batch_by_max_length()
    {
        var tokenizer = CLIPTokenizer.FromPretrained(TokenizerDir);
        using var ids = tokenizer.Encode(["a red circle", ""]);
        Assert.Equal([2L, 77L], ids.shape);
        Assert.Equal(TorchSharp.torch.ScalarType.Int64, ids.dtype);
        Assert.Equal(tokenizer.Encode("a red circle").Select(i => (long)i), ids[0].data<long>().ToArray());
    }

    [Fact]
    public void Special_tokens_in_the_text_are_kept_whole()
    {
        var tokenizer = CLIPTokenizer.FromPretrained(TokenizerDir);
        Assert.Equal(["red</w>", "<|endoftext|>", "circle</w>"], tokenizer.Tokenize("red<|endoftext|>circle"));
    }

    [Fact]
    public void Whitespace_case_and_unicode_composition_are_normalised()
    {
        var tokenizer = CLIPTokenizer.FromPretrained(TokenizerDir);
        Assert.Equal(tokenizer.Encode("a red circle"), tokenizer.Encode("  A\tRED \n circle  "));
        Assert.Equal(tokenizer.Encode("caf\u00e9"), tokenizer.Encode("CAFE\u0301"));
    }

    [Theory]
    [InlineData("vocab.json")]
    [InlineData("merges.txt")]
    public void Missing_file_is_named(string file)
    {
        foreach (var f in Directory.GetFiles(TokenizerDir)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        File.Delete(Path.Combine(dir, file));
        var e = Assert.Throws<FileNotFoundException>(() => CLIPTokenizer.FromPretrained(dir));
        Assert.Contains(file, e.Message);
    }
}
