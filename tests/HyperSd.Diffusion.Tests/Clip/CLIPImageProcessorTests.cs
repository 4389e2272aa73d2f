using HyperSd.Diffusion.Clip;
using HyperSd.Diffusion.Images;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Clip;

public class CLIPImageProcessorTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("clip-processor-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    static readonly double[] Mean = [0.48145466, 0.4578275, 0.40821073];
    static readonly double[] Std = [0.26862954, 0.26130258, 0.27577711];

    /// <summary>Pillow's coefficients worked out by hand. 4 → 2: scale 2, so the cubic (a = −0.5) is stretched to a
    /// support of ±4; output 0 is centred at 1.0 and takes input pixels 0..3 at distances −0.25, 0.25, 0.75, 1.25 (in
    /// stretched units): f = 0.8671875, 0.8671875, 0.2265625, −0.0703125, normalised by their sum 1.890625. 2 → 4: no
    /// stretch; output 0 is centred at 0.25 and takes pixels 0..1 at 0.25 and 1.25: 0.8671875 and −0.0703125 over 0.796875.</summary>
    [Fact]
    public void Resampling_weights_are_pillows_bicubic_coefficients()
    {
        var down = BicubicResampling.Weights(4, 2);
        double[] row0 = [0.8671875 / 1.890625, 0.8671875 / 1.890625, 0.2265625 / 1.890625, -0.0703125 / 1.890625];
        for (int j = 0; j < 4; j++)
        {
            Assert.Equal(row0[j], down[0, j], 12);
            Assert.Equal(row0[3 - j], down[1, j], 12);
        }
        var up = BicubicResampling.Weights(2, 4);
        Assert.Equal(0.8671875 / 0.796875, up[0, 0], 12);
        Assert.Equal(-0.0703125 / 0.796875, up[0, 1], 12);
        Assert.Equal(1.0, Enumerable.Range(0, 2).Sum(j => up[2, j]), 12);
    }

    /// <summary>A step edge [0, 0, 255, 255] halved: 255·(0.11983 − 0.03719) = 21.07 → 21 and 255·2·0.45868 = 233.93 → 234,
    /// in Pillow's fixed point as in exact arithmetic.</summary>
    [Fact]
    public void Eight_bit_resize_of_a_step_edge_gives_the_hand_computed_pixels()
    {
        using var image = tensor(new float[] { 0, 0, 1, 1 }).view(1, 1, 1, 4);
        using var resized = BicubicResampling.Resize(image, 1, 2, eightBit: true);
        Assert.Equal(new[] { 21f / 255, 234f / 255 }, resized.flatten().data<float>().ToArray());
        using var constant = full([1, 3, 10, 20], 100 / 255f);
        using var same = BicubicResampling.Resize(constant, 7, 13, eightBit: true);
        Assert.True(same.eq(100 / 255f).all().item<bool>());
    }

    /// <summary>The float path is torch's antialiased bicubic one axis at a time (width, then height), clamped after each.</summary>
    [Fact]
    public void Float_resize_equals_torch_antialiased_bicubic_per_axis()
    {
        using var image = rand([2, 3, 37, 23], generator: new Generator(3));
        foreach (var (h, w) in new[] { (16, 11), (50, 9), (37, 40) })
        {
            using var ours = BicubicResampling.Resize(image, h, w, eightBit: false);
            Tensor Torch(Tensor x, long height, long width) =>
                nn.functional.interpolate(x, [height, width], mode: InterpolationMode.Bicubic, align_corners: false, antialias: true)
                    .clamp(0, 1);
            using var horizontal = w == 23 ? image.clone() : Torch(image, 37, w);
            using var torchs = h == 37 ? horizontal.clone() : Torch(horizontal, h, w);
            double error = (ours - torchs).abs().max().item<float>();
            Assert.True(error < 1e-5, $"{h}×{w}: max error {error}");
        }
    }

    [Fact]
    public void Shortest_edge_becomes_the_size_and_the_long_side_is_truncated()
    {
        var processor = new CLIPImageProcessor();
        Assert.Equal((224, 336), processor.ResizedSize(200, 300));
        Assert.Equal((336, 224), processor.ResizedSize(300, 200));
        Assert.Equal((224, 500), processor.ResizedSize(224, 500));
        Assert.Equal((224, 320), processor.ResizedSize(7, 10));
        Assert.Equal((224, 298), processor.ResizedSize(512, 683)); // 224·683/512 = 298.8
        using var image = rand([1, 3, 20, 30]);
        using var uncropped = (processor with { DoCenterCrop = false }).Preprocess(image);
        Assert.Equal([1L, 3, 224, 336], uncropped.shape);
        using var cropped = processor.Preprocess(image);
        Assert.Equal([1L, 3, 224, 224], cropped.shape);
    }

    /// <summary>No resize (the short side already is the shortest edge), a 3×3 crop of a 4×6 image: top (4 − 3) // 2 = 0,
    /// left (6 − 3) // 2 = 1; each value is (pixel/255 − mean) / std.</summary>
    [Fact]
    public void Centre_crop_box_and_normalisation_match_hand_values()
    {
        var processor = new CLIPImageProcessor { ShortestEdge = 4, CropSize = (3, 3) };
        using var image = arange(72, dtype: float32).view(3, 4, 6).div(255);
        using var pixels = processor.Preprocess(image);
        Assert.Equal([1L, 3, 3, 3], pixels.shape);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 3; y++)
                for (int x = 0; x < 3; x++)
                {
                    double expected = ((c * 24 + y * 6 + x + 1) / 255.0 - Mean[c]) / Std[c];
                    Assert.Equal(expected, pixels[0, c, y, x].item<float>(), 5);
                }

        // A crop larger than the image pads it with black (zero pixels) around the centre, as transformers does.
        using var small = full([3, 2, 2], 1f);
        using var padded = (processor with { DoResize = false, CropSize = (4, 5) }).Preprocess(small);
        Assert.Equal((0 - Mean[0]) / Std[0], padded[0, 0, 0, 0].item<float>(), 5);
        Assert.Equal((1 - Mean[0]) / Std[0], padded[0, 0, 1, 2].item<float>(), 5); // rows 1..2, columns 2..3 hold the image
        Assert.Equal((0 - Mean[0]) / Std[0], padded[0, 0, 1, 1].item<float>(), 5);
    }

    [Fact]
    public void Preprocessor_config_in_the_old_and_new_forms()
    {
        var old = Path.Combine(dir, "old.json");
        File.WriteAllText(old, """
            {"crop_size": 224, "do_center_crop": true, "do_normalize": true, "do_resize": true,
             "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
             "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}
            """);
        var loadedOld = CLIPImageProcessor.FromPretrained(old);
        Assert.Equal(Mean, loadedOld.ImageMean);
        Assert.Equal((224, 224), loadedOld.CropSize);
        Assert.Equal(224, loadedOld.ShortestEdge);
        Assert.True(loadedOld is
            { DoResize: true, DoCenterCrop: true, DoRescale: true, DoNormalize: true, DoConvertRgb: true, EightBit: true });


        File.WriteAllText(Path.Combine(dir, CLIPImageProcessor.ConfigName), """
            {"crop_size": {"height": 32, "width": 30}, "size": {"shortest_edge": 40}, "do_rescale": true, "rescale_factor": 0.5,
             "image_mean": [0.5, 0.5, 0.5], "image_std": 0.25, "image_processor_type": "CLIPImageProcessor", "resample": 3}
            """);
        var loaded = CLIPImageProcessor.FromPretrained(dir);
        Assert.Equal((32, 30), loaded.CropSize);
        Assert.Equal(40, loaded.ShortestEdge);
        Assert.Equal(0.5, loaded.RescaleFactor);
        Assert.Equal(new[] { 0.25, 0.25, 0.25 }, loaded.ImageStd);

        File.WriteAllText(old, """{"size": {"height": 64, "width": 48}, "resample": 2}""");
        var e = Assert.Throws<InvalidDataException>(() => CLIPImageProcessor.FromPretrained(old));
        Assert.Contains(old, e.Message);
        Assert.Contains("resample 2", e.Message);
    }

    [Fact]
    public void A_png_file_gives_the_same_pixel_values_as_its_tensor()
    {
        using var image = rand([3, 40, 56], generator: new Generator(11));
        var path = Path.Combine(dir, "image.png");
        ImageFiles.SavePng(image, path);
        var processor = new CLIPImageProcessor { ShortestEdge = 24, CropSize = (24, 24) };
        using var fromTensor = processor.Preprocess(image);
        using var fromFile = processor.Preprocess([path]);
        Assert.True(fromTensor.eq(fromFile).all().item<bool>());
        // The float path stays within about one 8-bit step of it (in normalised units 1/255/std ≈ 0.015).
        using var smooth = (processor with { EightBit = false }).Preprocess(image);
        Assert.True((smooth - fromTensor).abs().max().item<float>() < 0.02);
    }

    [Fact]
    public void Bad_inputs_are_named()
    {
        var processor = new CLIPImageProcessor();
        var notImage = Path.Combine(dir, "notes.png");
        File.WriteAllText(notImage, "not an image");
        var e = Assert.Throws<InvalidDataException>(() => processor.Preprocess([notImage]));
        Assert.Contains(notImage, e.Message);
        var missing = Path.Combine(dir, "missing.png");
        Assert.Contains(missing, Assert.Throws<FileNotFoundException>(() => processor.Preprocess([missing])).Message);

        using var signed = rand([1, 3, 8, 8]).mul(2).sub(1);
        Assert.Contains("[0, 1]", Assert.Throws<ArgumentException>(() => processor.Preprocess(signed)).Message);
        using var twoChannels = rand([1, 2, 8, 8]);
        Assert.Contains("2 channels", Assert.Throws<ArgumentException>(() => processor.Preprocess(twoChannels)).Message);
    }
}
