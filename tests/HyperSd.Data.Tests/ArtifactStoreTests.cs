using HyperSd.Data.Artifacts;

namespace HyperSd.Data.Tests;

public sealed class ArtifactStoreTests : IDisposable
{
    private readonly string scratch = Directory.CreateTempSubdirectory("hypersd-artifacts-").FullName;
    private readonly FileSystemArtifactStore store;

    public ArtifactStoreTests() => store = new FileSystemArtifactStore(Path.Combine(scratch, "store"));

    public void Dispose() => Directory.Delete(scratch, recursive: true);

    private string WriteSource(string relative, string content)
    {
        var path = Path.Combine(scratch, "src", relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, content);
        return path;
    }

    private string MakeCheckpoint(string name, string weights)
    {
        WriteSource($"{name}/config.json", "{\"k\": 8}");
        WriteSource($"{name}/unet/weights.bin", weights);
        return Path.Combine(scratch, "src", name);
    }

    [Fact]
    public async Task Imports_a_file_with_its_hash_and_size_and_leaves_no_temp_entries()
    {
        var source = WriteSource("report.txt", "hello");

        var info = await store.ImportAsync(source, "runs/r1/report.txt");

        Assert.Equal("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", info.Sha256);
        Assert.Equal(5, info.SizeBytes);
        Assert.Equal("hello", File.ReadAllText(store.GetFullPath("runs/r1/report.txt")));
        Assert.Equal(["report.txt"], Directory.GetFileSystemEntries(store.GetFullPath("runs/r1")).Select(Path.GetFileName));
    }

    [Fact]
    public async Task Imports_a_directory_recursively()
    {
        var info = await store.ImportAsync(MakeCheckpoint("ckpt", "0123456789"), "runs/r1/ckpt");

        Assert.Equal(8 + 10, info.SizeBytes);
        Assert.Equal("0123456789", File.ReadAllText(Path.Combine(store.GetFullPath("runs/r1/ckpt"), "unet", "weights.bin")));
        await store.VerifyAsync("runs/r1/ckpt", info.Sha256);
        Assert.Equal(["ckpt"], Directory.GetFileSystemEntries(store.GetFullPath("runs/r1")).Select(Path.GetFileName));
    }

    [Fact]
    public async Task A_failed_import_leaves_nothing_at_the_target_path()
    {
        var source = MakeCheckpoint("ckpt", "weights");
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => store.ImportAsync(source, "runs/r1/ckpt", cancelled.Token));

        Assert.False(store.Exists("runs/r1/ckpt"));
        Assert.Empty(Directory.GetFileSystemEntries(store.GetFullPath("runs/r1")));
    }

    [Fact]
    public async Task Reimporting_the_same_content_is_idempotent_and_different_content_is_refused()
    {
        var first = await store.ImportAsync(WriteSource("a/model.bin", "v1"), "models/m.bin");
        var again = await store.ImportAsync(WriteSource("b/model.bin", "v1"), "models/m.bin");
        Assert.Equal(first, again);

        var changed = WriteSource("c/model.bin", "v2");
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => store.ImportAsync(changed, "models/m.bin"));
        var changedHash = await ContentHash.OfFileAsync(changed);
        Assert.Contains("models/m.bin", error.Message);
        Assert.Contains(first.Sha256, error.Message);
        Assert.Contains(changedHash, error.Message);
        Assert.Equal("v1", File.ReadAllText(store.GetFullPath("models/m.bin")));
    }

    [Fact]
    public async Task Directory_hash_is_stable_and_sensitive_to_content_and_names()
    {
        var a = await ContentHash.OfAsync(MakeCheckpoint("a", "weights"));
        var b = await ContentHash.OfAsync(MakeCheckpoint("b", "weights"));
        var c = await ContentHash.OfAsync(MakeCheckpoint("c", "weightz"));
        WriteSource("d/config.json", "{\"k\": 8}");
        WriteSource("d/unet/weights2.bin", "weights");
        var d = await ContentHash.OfAsync(Path.Combine(scratch, "src", "d"));

        Assert.Equal(a, b);
        Assert.NotEqual(a.Sha256, c.Sha256);
        Assert.NotEqual(a.Sha256, d.Sha256);
        Assert.Equal(a.SizeBytes, d.SizeBytes);
    }

    [Fact]
    public async Task Verify_detects_corrupt_and_missing_artifacts()
    {
        var info = await store.ImportAsync(MakeCheckpoint("ckpt", "weights"), "ckpt");
        File.AppendAllText(Path.Combine(store.GetFullPath("ckpt"), "unet", "weights.bin"), "!");

        var corrupt = await Assert.ThrowsAsync<ArtifactCorruptException>(() => store.VerifyAsync("ckpt", info.Sha256));
        Assert.Contains("'ckpt'", corrupt.Message);
        Assert.Contains(info.Sha256, corrupt.Message);
        Assert.NotNull(corrupt.ActualSha256);
        Assert.Contains(corrupt.ActualSha256, corrupt.Message);

        var missing = await Assert.ThrowsAsync<ArtifactCorruptException>(() => store.VerifyAsync("nope.bin", info.Sha256));
        Assert.Contains("'nope.bin'", missing.Message);
        Assert.Null(missing.ActualSha256);
    }

    [Theory]
    [InlineData("../outside.txt")]
    [InlineData("runs/../../outside.txt")]
    [InlineData("/etc/passwd")]
    [InlineData("")]
    public void Paths_escaping_the_root_are_refused(string path)
    {
        Assert.Throws<ArgumentException>(() => store.GetFullPath(path));
    }

    [Fact]
    public void Paths_inside_the_root_resolve_under_it()
    {
        Assert.Equal(Path.Combine(store.Root, "runs", "r1", "x.bin"), store.GetFullPath("runs/r1/x.bin"));
    }
}
