using HyperSd.Diffusion.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.IO;

public class SafeTensorsTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("st-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    [Fact]
    public void Save_then_load_gives_identical_tensors_of_every_dtype()
    {
        var tensors = new Dictionary<string, Tensor>
        {
            ["a.f32"] = randn(3, 5), ["b.f16"] = randn(4).to(float16), ["c.bf16"] = randn(2, 2).to(bfloat16),
            ["d.i64"] = arange(7), ["e.scalar"] = tensor(2.5f),
        };
        var path = System.IO.Path.Combine(dir, "x.safetensors");
        SafeTensors.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var loaded = SafeTensors.Load(path);
        Assert.Equal(tensors.Keys.Order(), loaded.Keys.Order());
        foreach (var (k, v) in tensors)
        {
            Assert.Equal(v.dtype, loaded[k].dtype);
            Assert.True(v.eq(loaded[k]).all().item<bool>(), k);
        }
        Assert.Equal("pt", SafeTensors.ReadMetadata(path)["format"]);
    }

    [Fact]
    public void Truncated_file_names_the_file_and_the_tensor()
    {
        var path = System.IO.Path.Combine(dir, "t.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = randn(64, 64) });
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 100)]);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Load(path));
        Assert.Contains("truncated", e.Message);
        Assert.Contains("'w'", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Pickle_checkpoints_are_refused()
    {
        var path = System.IO.Path.Combine(dir, "model.ckpt");
        File.WriteAllBytes(path, [0x80, 0x02, 0x7d, 0x71]);
        var e = Assert.Throws<NotSupportedException>(() => SafeTensors.Load(path));
        Assert.Contains("pickle", e.Message);
        var zip = System.IO.Path.Combine(dir, "model.safetensors");
        File.WriteAllBytes(zip, [(byte)'P', (byte)'K', 3, 4]);
        Assert.Throws<NotSupportedException>(() => SafeTensors.Load(zip));
    }

    [Fact]
    public void Missing_file_is_a_clear_error()
    {
        var e = Assert.Throws<FileNotFoundException>(() => SafeTensors.Load(System.IO.Path.Combine(dir, "nope.safetensors")));
        Assert.Contains("nope.safetensors", e.Message);
    }
}
