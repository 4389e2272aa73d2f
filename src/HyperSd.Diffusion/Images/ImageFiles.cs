using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Images;

/// <summary>Converts between image tensors (CHW, RGB, values in [0, 1]) and PNG files.</summary>
public static class ImageFiles
{
    /// <summary>Writes a [3, H, W] tensor in [0, 1] as an 8-bit PNG with the given tEXt chunks.</summary>
    public static void SavePng(Tensor image, string path, IReadOnlyDictionary<string, string>? text = null)
    {
        using var img = ToImage(image);
        var png = img.Metadata.GetPngMetadata();
        foreach (var (key, value) in text ?? new Dictionary<string, string>())
            png.TextData.Add(new PngTextData(key, value, "", ""));
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var tmp = path + ".tmp";
        img.SaveAsPng(tmp, new PngEncoder { TextCompressionThreshold = int.MaxValue });
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>The tEXt/zTXt/iTXt chunks of a PNG file.</summary>
    public static Dictionary<string, string> ReadPngText(string path) => ReadPngInfo(path).Text;

    /// <summary>A PNG's size and text chunks from its header and metadata, without decoding its pixels.</summary>
    public static (int Width, int Height, Dictionary<string, string> Text) ReadPngInfo(string path)
    {
        var info = Image.Identify(path) ?? throw new InvalidDataException($"{path}: not an image ImageSharp can read");
        return (info.Width, info.Height, info.Metadata.GetPngMetadata().TextData.ToDictionary(t => t.Keyword, t => t.Value));
    }

    public static Image<Rgb24> ToImage(Tensor image)
    {
        if (image.dim() != 3 || image.shape[0] != 3)
            throw new ArgumentException($"expected an image tensor [3, H, W], got [{string.Join(", ", image.shape)}]");
        using var bytes = image.detach().to(float32).cpu().clamp(0, 1).mul(255).round().to(ScalarType.Byte).permute(1, 2, 0).contiguous();
        int h = (int)image.shape[1], w = (int)image.shape[2];
        return Image.LoadPixelData<Rgb24>(bytes.bytes.ToArray(), w, h);
    }

    /// <summary>Reads an image file as a [3, H, W] float tensor in [0, 1].</summary>
    public static Tensor LoadRgb(string path)
    {
        using var img = Image.Load<Rgb24>(path);
        var pixels = new byte[img.Width * img.Height * 3];
        img.CopyPixelDataTo(pixels);
        return torch.tensor(pixels, [img.Height, img.Width, 3]).permute(2, 0, 1).to(float32).div(255);
    }

    /// <summary>Tiles [N, 3, H, W] images into a rows × columns grid (row-major), for image grids in reports.</summary>
    public static Tensor Grid(Tensor images, int columns, int padding = 2)
    {
        long n = images.shape[0], h = images.shape[2], w = images.shape[3];
        int rows = (int)Math.Ceiling(n / (double)columns);
        var grid = ones(3, rows * (h + padding) + padding, columns * (w + padding) + padding, dtype: images.dtype);
        for (int i = 0; i < n; i++)
        {
            long y = padding + i / columns * (h + padding), x = padding + i % columns * (w + padding);
            grid[.., TensorIndex.Slice(y, y + h), TensorIndex.Slice(x, x + w)] = images[i];
        }
        return grid;
    }
}
