using System.Text.Json.Nodes;
using HyperSd.Diffusion.Images;
using SixLabors.ImageSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Clip;

/// <summary>
/// transformers' <c>CLIPImageProcessor</c>: shortest side resized (Pillow bicubic), centre crop, rescale by 1/255, then
/// normalise with CLIP's mean and std. Reads <c>preprocessor_config.json</c> (both the old int form of size/crop_size and
/// the dict form).
/// <para>Inputs are RGB images with values in [0, 1], the repository's convention (what the pipelines return and
/// <see cref="ImageFiles.LoadRgb"/> gives); VAE decoder outputs in [−1, 1] must be mapped with (x + 1) / 2 first. The
/// reference works on 8-bit pixels (PIL images): with <see cref="EightBit"/> (the default) a float image is rounded to
/// 8 bits as saving it as PNG would, and the resize reproduces Pillow's integer arithmetic, so a tensor and its PNG
/// file give the same pixel_values. <see cref="EightBit"/> = false keeps everything in float (torch's antialiased
/// bicubic per axis, clamped after each) and differentiable, for reward gradients; it differs from the reference by up
/// to about one 8-bit level per pixel before normalisation (see <see cref="BicubicResampling"/>).</para>
/// </summary>
public sealed record CLIPImageProcessor
{
    public const string ConfigName = "preprocessor_config.json";
    /// <summary>PIL's Resampling.BICUBIC, the only filter supported (CLIP's).</summary>
    public const int Bicubic = 3;

    public static readonly IReadOnlyList<double> OpenAIClipMean = [0.48145466, 0.4578275, 0.40821073];
    public static readonly IReadOnlyList<double> OpenAIClipStd = [0.26862954, 0.26130258, 0.27577711];

    public bool DoResize { get; init; } = true;
    /// <summary>size["shortest_edge"]: the shorter side after resizing (the longer keeps the aspect ratio, truncated).</summary>
    public int? ShortestEdge { get; init; } = 224;
    /// <summary>size["height"], size["width"]: a fixed output size, used when <see cref="ShortestEdge"/> is null.</summary>
    public (int Height, int Width)? Size { get; init; }
    public bool DoCenterCrop { get; init; } = true;
    public (int Height, int Width) CropSize { get; init; } = (224, 224);
    public bool DoRescale { get; init; } = true;
    public double RescaleFactor { get; init; } = 1 / 255.0;
    public bool DoNormalize { get; init; } = true;
    public IReadOnlyList<double> ImageMean { get; init; } = OpenAIClipMean;
    public IReadOnlyList<double> ImageStd { get; init; } = OpenAIClipStd;
    public bool DoConvertRgb { get; init; } = true;
    /// <summary>Round to 8 bits and resize as Pillow does (reference parity); false: float and differentiable.</summary>
    public bool EightBit { get; init; } = true;

    /// <summary>Reads <c>preprocessor_config.json</c> from a folder (or the file itself).</summary>
    public static CLIPImageProcessor FromPretrained(string path)
    {
        var file = Directory.Exists(path) ? Path.Combine(path, ConfigName) : path;
        if (!File.Exists(file)) throw new FileNotFoundException($"image processor config not found: {file}", file);
        JsonObject json;
        try
        {
            json = JsonNode.Parse(File.ReadAllText(file)) as JsonObject
                   ?? throw new InvalidDataException($"{file}: expected a JSON object");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException($"{file}: not valid JSON: {e.Message}");
        }
        try
        {
            return Parse(json, file);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or System.Text.Json.JsonException)
        {
            throw new InvalidDataException($"{file}: {e.Message}");
        }
    }

    static CLIPImageProcessor Parse(JsonObject json, string file)
    {
        var defaults = new CLIPImageProcessor();
        bool Flag(string name, bool fallback) => json[name]?.GetValue<bool>() ?? fallback;
        IReadOnlyList<double> Channels(string name, IReadOnlyList<double> fallback) => json[name] switch
        {
            JsonArray a => a.Select(v => v!.GetValue<double>()).ToList(),
            JsonValue v => [v.GetValue<double>(), v.GetValue<double>(), v.GetValue<double>()],
            _ => fallback,
        };
        int resample = json["resample"]?.GetValue<int>() ?? Bicubic;
        if (resample != Bicubic)
            throw new InvalidDataException($"{file}: resample {resample} is not supported (only {Bicubic}, PIL's BICUBIC, as CLIP uses)");
        // transformers' get_size_dict: an int size is the shortest edge, an int crop_size a square
        int? shortest = defaults.ShortestEdge;
        (int, int)? size = null;
        switch (json["size"])
        {
            case JsonValue v: shortest = v.GetValue<int>(); break;
            case JsonObject o when o["shortest_edge"] is { } edge: shortest = edge.GetValue<int>(); break;
            case JsonObject o when o["height"] is { } h && o["width"] is { } w:
                shortest = null;
                size = (h.GetValue<int>(), w.GetValue<int>());
                break;
            case JsonObject o:
                throw new InvalidDataException($"{file}: size {o.ToJsonString()} has neither shortest_edge nor height and width");
        }
        var crop = json["crop_size"] switch
        {
            JsonValue v => (v.GetValue<int>(), v.GetValue<int>()),
            JsonObject o => (o["height"]?.GetValue<int>() ?? throw new InvalidDataException($"{file}: crop_size has no height"),
                o["width"]?.GetValue<int>() ?? throw new InvalidDataException($"{file}: crop_size has no width")),
            _ => defaults.CropSize,
        };
        var processor = new CLIPImageProcessor
        {
            DoResize = Flag("do_resize", true), ShortestEdge = shortest, Size = size, DoCenterCrop = Flag("do_center_crop", true),
            CropSize = crop, DoRescale = Flag("do_rescale", true),
            RescaleFactor = json["rescale_factor"]?.GetValue<double>() ?? defaults.RescaleFactor,
            DoNormalize = Flag("do_normalize", true), ImageMean = Channels("image_mean", defaults.ImageMean),
            ImageStd = Channels("image_std", defaults.ImageStd), DoConvertRgb = Flag("do_convert_rgb", true),
        };
        return processor.Validate(file);
    }

    CLIPImageProcessor Validate(string source)
    {
        if (ImageMean.Count != 3 || ImageStd.Count != 3)
            throw new InvalidDataException($"{source}: image_mean and image_std need 3 values, got {ImageMean.Count} and {ImageStd.Count}");
        if (ImageStd.Any(s => s <= 0))
            throw new InvalidDataException($"{source}: image_std must be positive, got [{string.Join(", ", ImageStd)}]");
        if (ShortestEdge is <= 0 || Size is { Height: <= 0 } or { Width: <= 0 } || CropSize.Height <= 0 || CropSize.Width <= 0)
            throw new InvalidDataException($"{source}: size and crop_size must be positive");
        return this;
    }

    /// <summary>The size after resizing (transformers' get_resize_output_image_size): the shorter side becomes
    /// shortest_edge and the longer one int(shortest_edge · long / short), truncated.</summary>
    public (int Height, int Width) ResizedSize(int height, int width)
    {
        if (ShortestEdge is not int edge) return Size ?? (height, width);
        int shortSide = Math.Min(height, width), longSide = Math.Max(height, width);
        if (shortSide == edge) return (height, width);
        int newLong = (int)((double)edge * longSide / shortSide);
        return width <= height ? (newLong, edge) : (edge, newLong);
    }

    /// <summary>pixel_values [N, 3, crop_h, crop_w] (float32, on the images' device) for images [N, C, H, W] or [C, H, W]
    /// with values in [0, 1] (C = 3; 1 is grey, 4 drops alpha, as PIL's convert("RGB") does).</summary>
    public Tensor Preprocess(Tensor images)
    {
        using var scope = NewDisposeScope();
        var x = images.dim() == 3 ? images.unsqueeze(0) : images;
        if (x.dim() != 4)
            throw new ArgumentException($"expected images [N, C, H, W] or [C, H, W], got [{string.Join(", ", images.shape)}]");
        x = x.shape[1] switch
        {
            3 => x,
            1 when DoConvertRgb => x.expand(-1, 3, -1, -1),
            4 when DoConvertRgb => x[.., ..3],
            _ => throw new ArgumentException(
                $"expected RGB images (3 channels), got {x.shape[1]} channels in [{string.Join(", ", images.shape)}]"),
        };
        if (x.numel() > 0)
        {
            double min = x.min().item<float>(), max = x.max().item<float>();
            if (min < -0.02 || max > 1.02)
                throw new ArgumentException(
                    $"images must have values in [0, 1] (got {min:G4} to {max:G4}); map VAE outputs in [-1, 1] with (x + 1) / 2");

        }
        // Work in float64 so that 8-bit pixel values stay exact integers until the final float32 output.
        x = x.to(ScalarType.Float64);
        if (DoResize)
        {
            var (h, w) = ResizedSize((int)x.shape[2], (int)x.shape[3]);
            x = BicubicResampling.Resize(x, h, w, EightBit);
        }
        var pixels = EightBit ? x.clamp(0, 1).mul(255).round() : x.clamp(0, 1).mul(255);
        if (DoCenterCrop) pixels = CenterCrop(pixels, CropSize.Height, CropSize.Width);
        if (DoRescale) pixels = pixels.mul(RescaleFactor);
        if (DoNormalize)
        {
            var mean = tensor(ImageMean.ToArray(), ScalarType.Float64, pixels.device).view(1, 3, 1, 1);
            var std = tensor(ImageStd.ToArray(), ScalarType.Float64, pixels.device).view(1, 3, 1, 1);
            pixels = pixels.sub(mean).div(std);
        }
        return pixels.to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>pixel_values for image files (any format ImageSharp reads: PNG, JPEG, WebP…), each resized and cropped on
    /// its own, so their sizes may differ.</summary>
    public Tensor Preprocess(IEnumerable<string> paths)
    {
        var parts = new List<Tensor>();
        try
        {
            foreach (var path in paths)
            {
                using var image = LoadImage(path);
                parts.Add(Preprocess(image));
            }
            if (parts.Count == 0) throw new ArgumentException("no image files given");
            return cat(parts, 0);
        }
        finally
        {
            foreach (var p in parts) p.Dispose();
        }
    }

    /// <summary>transformers' center_crop: top = (H − h) // 2, left = (W − w) // 2; a side shorter than the crop is
    /// zero-padded around the image first.</summary>
    static Tensor CenterCrop(Tensor pixels, int cropHeight, int cropWidth)
    {
        long height = pixels.shape[2], width = pixels.shape[3];
        if (height < cropHeight || width < cropWidth)
        {
            long newHeight = Math.Max(height, cropHeight), newWidth = Math.Max(width, cropWidth);
            long top = (newHeight - height + 1) / 2, left = (newWidth - width + 1) / 2;
            var padded = zeros([pixels.shape[0], pixels.shape[1], newHeight, newWidth], pixels.dtype, pixels.device);
            padded[.., .., TensorIndex.Slice(top, top + height), TensorIndex.Slice(left, left + width)] = pixels;
            (pixels, height, width) = (padded, newHeight, newWidth);
        }
        long y = (height - cropHeight) / 2, x = (width - cropWidth) / 2;
        return pixels[.., .., TensorIndex.Slice(y, y + cropHeight), TensorIndex.Slice(x, x + cropWidth)];
    }

    static Tensor LoadImage(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"image file not found: {path}", path);
        try
        {
            return ImageFiles.LoadRgb(path);
        }
        catch (Exception e) when (e is ImageFormatException or NotSupportedException)
        {
            throw new InvalidDataException($"{path}: not a readable image file ({e.Message})", e);
        }
    }
}
