using System.Text.Json.Nodes;
using HyperSd.Diffusion.Images;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Clip;

/// <summary><see cref="BicubicResampling"/> against Pillow itself: small 8-bit images and Pillow's
/// <c>Image.resize(size, BICUBIC)</c> of them (data/pillow_bicubic, written by tools/fixtures/pillow_bicubic.py).</summary>
public class PillowBicubicTests
{
    static readonly string Data = Path.Combine(AppContext.BaseDirectory, "Clip", "data", "pillow_bicubic");

    public static TheoryData<string> Cases()
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Data, "cases.json")))!;
        var data = new TheoryData<string>();
        foreach (var c in json["cases"]!.AsArray()) data.Add(c!["name"]!.GetValue<string>());
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Eight_bit_resize_equals_pillow_exactly_and_the_float_one_is_within_a_level(string name)
    {
        using var input = ImageFiles.LoadRgb(Path.Combine(Data, $"{name}_in.png"));
        using var expected = ImageFiles.LoadRgb(Path.Combine(Data, $"{name}_out.png"));
        int height = (int)expected.shape[1], width = (int)expected.shape[2];

        using var eightBit = BicubicResampling.Resize(input, height, width, eightBit: true);
        using var levels = (eightBit - expected).abs().mul(255).round();
        Assert.True(levels.max().item<float>() == 0, $"{name}: {levels.gt(0).sum().item<long>()} pixels differ from Pillow");

        // Float passes skip the 8-bit rounding between and after the passes: about a level off at most.
        using var smooth = BicubicResampling.Resize(input, height, width, eightBit: false);
        double error = (smooth.clamp(0, 1) - expected).abs().max().item<float>() * 255;
        Assert.True(error <= 1.5, $"{name}: float path is {error:F2} levels from Pillow");
    }
}
