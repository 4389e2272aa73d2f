using System.Text.Json.Serialization;
using HyperSd.Diffusion.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Toy;

public sealed record ToyRecognizerConfig
{
    [JsonPropertyName("_class_name")] public string ClassName { get; init; } = nameof(ToyRecognizer);
    public int SampleSize { get; init; } = ToyShapes.Resolution;
    /// <summary>Output channels of each conv block; each block halves the resolution.</summary>
    public IReadOnlyList<int> BlockOutChannels { get; init; } = [16, 32, 64];
    /// <summary>Width of the penultimate layer, the features of the toy FID.</summary>
    public int FeatureDim { get; init; } = 128;
}

/// <summary>Logits per position cell: shape [N, 5, 4] (none, circle, square, triangle), colour [N, 5, 4], size [N, 5, 2].</summary>
public sealed record ToyRecognizerOutput(Tensor ShapeLogits, Tensor ColorLogits, Tensor SizeLogits);

/// <summary>
/// The toy world's recognition model: a small CNN that tells, for each of the five position cells of a
/// <see cref="ToyShapes"/> image, which shape (or none), colour and size it holds. Its penultimate features give the
/// toy FID and its predictions give prompt adherence. Images are float [N, 3, 32, 32] in [0, 1].
/// </summary>
public sealed class ToyRecognizer : nn.Module<Tensor, ToyRecognizerOutput>
{
    public static readonly int ShapeClasses = Enum.GetValues<ToyShape>().Length + 1; // class 0: empty cell
    static readonly int ColorClasses = Enum.GetValues<ToyColor>().Length;
    static readonly int SizeClasses = Enum.GetValues<ToySize>().Length;
    const int ChunkSize = 256;

    readonly ModuleList<Conv2d> convs = new();
    readonly Linear fc;
    readonly Linear shape_head;
    readonly Linear color_head;
    readonly Linear size_head;

    public ToyRecognizerConfig Config { get; }

    public ToyRecognizer(ToyRecognizerConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(ToyRecognizer))
    {
        int blocks = config.BlockOutChannels.Count, downscale = 1 << blocks;
        if (blocks == 0 || config.BlockOutChannels.Any(c => c <= 0) || config.FeatureDim <= 0)
            throw new ArgumentException($"block_out_channels [{string.Join(", ", config.BlockOutChannels)}] " +
                                        $"and feature_dim {config.FeatureDim} must be positive and non-empty");
        if (config.SampleSize % downscale != 0)
            throw new ArgumentException(
                $"sample_size {config.SampleSize} must be a multiple of {downscale} ({blocks} blocks each halve it)");
        Config = config;
        int inChannels = 3;
        foreach (var c in config.BlockOutChannels)
        {
            convs.Add(nn.Conv2d(inChannels, c, 3, padding: 1, device: device, dtype: dtype));
            inChannels = c;
        }
        int side = config.SampleSize / downscale;
        fc = nn.Linear(inChannels * side * side, config.FeatureDim, device: device, dtype: dtype);
        shape_head = nn.Linear(config.FeatureDim, ToyShapes.Positions * ShapeClasses, device: device, dtype: dtype);
        color_head = nn.Linear(config.FeatureDim, ToyShapes.Positions * ColorClasses, device: device, dtype: dtype);
        size_head = nn.Linear(config.FeatureDim, ToyShapes.Positions * SizeClasses, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override ToyRecognizerOutput forward(Tensor images)
    {
        var features = Trunk(images);
        long n = images.shape[0];
        return new(shape_head.call(features).view(n, ToyShapes.Positions, ShapeClasses),
            color_head.call(features).view(n, ToyShapes.Positions, ColorClasses),
            size_head.call(features).view(n, ToyShapes.Positions, SizeClasses));
    }

    /// <summary>Penultimate features [N, feature_dim] (float32, CPU), computed in chunks without gradients.</summary>
    public Tensor Features(Tensor images)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        return cat(Chunks(images).Select(chunk => Trunk(chunk).to(ScalarType.Float32, CPU)).ToArray(), 0).MoveToOuterDisposeScope();
    }

    /// <summary>Penultimate features [N, feature_dim] with gradients (to the images too): for rewards that feedback learning
    /// backpropagates through.</summary>
    public Tensor Embeddings(Tensor images) => Trunk(images);

    /// <summary>The objects seen in each image: one per cell whose most likely shape is not "none".</summary>
    public IReadOnlyList<ToyScene> Recognize(Tensor images)
    {
        using var _ = no_grad();
        var scenes = new List<ToyScene>();
        foreach (var chunk in Chunks(images))
        {
            using var scope = NewDisposeScope();
            var output = forward(chunk);
            long[] Argmax(Tensor logits) => logits.argmax(-1).cpu().data<long>().ToArray();
            var (shapes, colors, sizes) = (Argmax(output.ShapeLogits), Argmax(output.ColorLogits), Argmax(output.SizeLogits));
            for (int n = 0; n < chunk.shape[0]; n++)
                scenes.Add(new ToyScene(Enumerable.Range(n * ToyShapes.Positions, ToyShapes.Positions).Where(i => shapes[i] != 0)
                    .Select(i => new ToyObject(
                        (ToyShape)(shapes[i] - 1), (ToyColor)colors[i], (ToyPosition)(i % ToyShapes.Positions), (ToySize)sizes[i]))
                    .ToArray()));
        }
        return scenes;
    }

    public static ToyRecognizer FromPretrained(string dir, Device? device = null, ScalarType? dtype = null) =>
        PretrainedModel.Load<ToyRecognizerConfig, ToyRecognizer>(dir, config => new ToyRecognizer(config, device, dtype));

    /// <summary>Writes <c>config.json</c> and the weights as safetensors into <paramref name="dir"/>.</summary>
    public void SavePretrained(string dir) => PretrainedModel.Save(this, Config, dir);

    Tensor Trunk(Tensor images)
    {
        if (images.dim() != 4 || images.shape[1] != 3 || images.shape[2] != Config.SampleSize || images.shape[3] != Config.SampleSize)
            throw new ArgumentException($"toy recognizer expects images [N, 3, {Config.SampleSize}, {Config.SampleSize}], " +
                                        $"got [{string.Join(", ", images.shape)}]");
        var weight = fc.weight!;
        var x = images.to(weight.dtype, weight.device) * 2 - 1;
        foreach (var conv in convs)
            x = nn.functional.max_pool2d(nn.functional.relu(conv.call(x)), 2);
        return nn.functional.relu(fc.call(x.flatten(1)));
    }

    static IEnumerable<Tensor> Chunks(Tensor images) => images.shape[0] <= ChunkSize ? [images] : images.split(ChunkSize);
}
