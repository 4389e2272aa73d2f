using HyperSd.Distillation.Toy;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Data;

/// <summary>One image and its caption. <paramref name="OpenImage"/> decodes the image when it is needed (and may throw
/// for an unreadable file); <paramref name="Problem"/>, when set, is why the source already knows the item is unusable
/// (no caption file, an empty caption).</summary>
public sealed record SourceItem(string Id, string Caption, Func<Image> OpenImage, string? Label = null, string? Problem = null);

/// <summary>Images with captions for dataset preparation, in a fixed order.</summary>
public interface IImageCaptionSource
{
    /// <summary>What the data came from, for the dataset summary ("image folder /data/x").</summary>
    string Description { get; }
    IReadOnlyList<SourceItem> Items { get; }
}

/// <summary>A folder (searched recursively) of images, each with a sidecar <c>&lt;name&gt;.txt</c> caption, in ordinal
/// order of their relative paths.</summary>
public sealed class ImageFolderSource : IImageCaptionSource
{
    public static readonly IReadOnlySet<string> Extensions =
        new HashSet<string>(StringComparer.OrdinalIgnoreCase) { ".png", ".jpg", ".jpeg", ".webp", ".bmp" };

    public string Description { get; }
    public IReadOnlyList<SourceItem> Items { get; }

    public ImageFolderSource(string dir)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"image folder not found: {dir}");
        var root = Path.GetFullPath(dir);
        Description = $"image folder {root}";
        Items = Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .Where(f => Extensions.Contains(Path.GetExtension(f)))
            .Select(f => (Path: f, Id: Path.GetRelativePath(root, f).Replace('\\', '/')))
            .OrderBy(f => f.Id, StringComparer.Ordinal)
            .Select(f => Item(f.Path, f.Id)).ToList();
    }

    static SourceItem Item(string path, string id)
    {
        var captionPath = Path.ChangeExtension(path, ".txt");
        string caption = "";
        string? problem = null;
        try { caption = File.ReadAllText(captionPath).Trim(); }
        catch (FileNotFoundException) { problem = $"missing caption: no {Path.GetFileName(captionPath)} beside the image"; }
        catch (IOException e) { problem = $"unreadable caption {Path.GetFileName(captionPath)}: {e.Message}"; }
        if (problem is null && caption.Length == 0) problem = $"empty caption in {Path.GetFileName(captionPath)}";
        return new SourceItem(id, caption, () => Image.Load(path), Problem: problem);
    }
}

/// <summary>The toy world's generated scenes as a source: <c>ToyShapes.Generate(count, seed, ToyCaptionSplit.Train)</c>,
/// one image at a time, with each scene's labels kept. Training data: never a held-out caption (<see cref="ToyCaptions"/>).</summary>
public sealed class ToySource : IImageCaptionSource
{
    public string Description { get; }
    public IReadOnlyList<SourceItem> Items { get; }

    public ToySource(int count, int seed)
    {
        Description = $"toy shapes (seed {seed}, {count} scenes)";
        // ToyShapes.Render draws each scene on its own, so one at a time gives the same pixels as Generate.
        Items = ToyShapes.RandomScenes(count, seed, ToyCaptionSplit.Train)
            .Select((scene, i) => new SourceItem($"toy-{i:D6}", scene.Caption, () => Render(scene), scene.ToJson())).ToList();
    }

    /// <summary>Float pixels, so the toy images reach the autoencoder unquantised.</summary>
    static Image Render(ToyScene scene)
    {
        float[] values;
        using (NewDisposeScope()) values = ToyShapes.Render([scene])[0].permute(1, 2, 0).contiguous().data<float>().ToArray();
        var pixels = new RgbaVector[values.Length / 3];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = new RgbaVector(values[3 * i], values[3 * i + 1], values[3 * i + 2]);
        return Image.LoadPixelData<RgbaVector>(pixels, ToyShapes.Resolution, ToyShapes.Resolution);
    }
}
