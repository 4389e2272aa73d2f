using HyperSd.Services.Runs;

namespace HyperSd.Services.Tests;

/// <summary>A recipe's prompts file is read once, at submission, and only if it is a small regular file.</summary>
public sealed class PromptsFileTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("hypersd-prompts-").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    [Fact]
    public void The_lines_of_a_prompts_file_are_its_prompts() =>
        Assert.Equal(["a cat", "a dog"], RecipeMapping.ReadPromptsFile(Write("p.txt", "a cat\n\n  a dog \n"), "generation.prompts_file"));

    [Fact]
    public void A_device_is_refused_without_reading_it_whole() =>
        Assert.Contains("generation.prompts_file", Assert.Throws<InvalidDataException>(
            () => RecipeMapping.ReadPromptsFile("/dev/zero", "generation.prompts_file")).Message);

    [Fact]
    public void A_huge_file_is_refused_before_it_is_read()
    {
        var path = Path.Combine(dir, "huge.txt");
        using (var f = File.Create(path)) f.SetLength(1L << 30); // 1 GB, sparse
        var e = Assert.Throws<InvalidDataException>(() => RecipeMapping.ReadPromptsFile(path, "evaluation.prompts_file"));
        Assert.Contains("evaluation.prompts_file", e.Message);
        Assert.Contains("at most", e.Message);
    }

    [Fact]
    public void A_link_is_followed_to_its_regular_file_and_a_missing_file_named()
    {
        var target = Write("real.txt", "a cat");
        var link = Path.Combine(dir, "link.txt");
        File.CreateSymbolicLink(link, target);
        Assert.Equal(["a cat"], RecipeMapping.ReadPromptsFile(link, "generation.prompts_file"));
        Assert.Contains("generation.prompts_file", Assert.Throws<FileNotFoundException>(
            () => RecipeMapping.ReadPromptsFile(Path.Combine(dir, "none.txt"), "generation.prompts_file")).Message);
    }

    string Write(string name, string text)
    {
        var path = Path.Combine(dir, name);
        File.WriteAllText(path, text);
        return path;
    }
}
