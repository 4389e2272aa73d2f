using HyperSd.Diffusion.Images;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Images;

public class ImageFilesTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("img-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    [Fact]
    public void Png_round_trip_keeps_pixels_to_8_bits_and_the_text_chunks()
    {
        var image = rand(3, 5, 7);
        var path = Path.Combine(dir, "a.png");
        ImageFiles.SavePng(image, path, new Dictionary<string, string> { ["parameters"] = "a red circle\nSteps: 4", ["seed"] = "42" });
        var back = ImageFiles.LoadRgb(path);
        Assert.Equal(image.shape, back.shape);
        Assert.True((back - image).abs().max().item<float>() <= 0.5f / 255 + 1e-6);
        var text = ImageFiles.ReadPngText(path);
        Assert.Equal("a red circle\nSteps: 4", text["parameters"]);
        Assert.Equal("42", text["seed"]);
    }

    [Fact]
    public void Grid_places_images_row_major()
    {
        var images = stack([zeros(3, 2, 2), ones(3, 2, 2) * 0.5]);
        var grid = ImageFiles.Grid(images, columns: 2, padding: 1);
        Assert.Equal(new long[] { 3, 4, 7 }, grid.shape);
        Assert.Equal(0f, grid[0, 1, 1].item<float>());
        Assert.Equal(0.5f, grid[0, 1, 4].item<float>());
    }
}
