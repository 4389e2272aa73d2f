using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Toy;

public sealed record ToyRecognizerTrainingOptions
{
    public int Steps { get; init; } = 600;
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 5e-3;
    public int Seed { get; init; }
    /// <summary>Training images get Gaussian noise with a standard deviation drawn per image from [0, max_noise], so the
    /// recognizer also reads the imperfect images a diffusion model makes.</summary>
    public double MaxNoise { get; init; } = 0.1;
}

/// <summary>Accuracies over position cells: shape (empty cells included), colour and size (cells holding an object; a
/// missed object counts as wrong), and the share of images whose recognised scene is exactly right.</summary>
public sealed record ToyRecognizerAccuracy(double Shape, double Color, double Size, double Scene)
{
    public double Min => Math.Min(Math.Min(Shape, Color), Math.Min(Size, Scene));
}

/// <summary>Trains <see cref="ToyRecognizer"/> on freshly generated <see cref="ToyShapes"/> batches (never the same
/// batch twice) with Adam and a cosine learning-rate decay.</summary>
public static class ToyRecognizerTrainer
{
    /// <summary>cross_entropy's ignore_index: colour and size of empty cells carry no loss.</summary>
    public const long Ignore = -100;

    public static ToyRecognizer Train(ToyRecognizerTrainingOptions options, ToyRecognizerConfig? config = null, Device? device = null,
        Action<int, double>? onStep = null)
    {
        if (options.Steps <= 0 || options.BatchSize <= 0 || options.LearningRate <= 0 || options.MaxNoise < 0)
            throw new ArgumentException($"invalid toy recognizer training options: {options}");
        manual_seed(options.Seed);
        var model = new ToyRecognizer(config ?? new ToyRecognizerConfig(), device);
        var random = new Random(options.Seed);
        var noise = new Generator((ulong)options.Seed, CPU);
        using var optimizer = optim.Adam(model.parameters(), options.LearningRate);
        var schedule = optim.lr_scheduler.CosineAnnealingLR(optimizer, options.Steps);
        model.train();
        for (int step = 0; step < options.Steps; step++)
        {
            using var scope = NewDisposeScope();
            var scenes = Enumerable.Range(0, options.BatchSize).Select(_ => ToyShapes.RandomScene(random)).ToArray();
            var images = ToyShapes.Render(scenes);
            images = ToyDegradation.RandomNoise(images, options.MaxNoise, noise);
            optimizer.zero_grad();
            var loss = Loss(model, images, scenes);
            loss.backward();
            optimizer.step();
            schedule.step();
            onStep?.Invoke(step, loss.item<float>());
        }
        model.eval();
        return model;
    }

    /// <summary>Sum of the shape, colour and size cross-entropies over the cells.</summary>
    public static Tensor Loss(ToyRecognizer model, Tensor images, IReadOnlyList<ToyScene> scenes)
    {
        var output = model.call(images);
        var device = output.ShapeLogits.device;
        var (shape, color, size) = Targets(scenes);
        Tensor CrossEntropy(Tensor logits, Tensor target) =>
            nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten().to(device), ignore_index: Ignore);
        return CrossEntropy(output.ShapeLogits, shape) + CrossEntropy(output.ColorLogits, color) + CrossEntropy(output.SizeLogits, size);
    }

    /// <summary>Class targets per cell, int64 [N, 5] each: shape (0 = empty, else shape + 1), colour and size
    /// (−100 for empty cells).</summary>
    public static (Tensor Shape, Tensor Color, Tensor Size) Targets(IReadOnlyList<ToyScene> scenes) =>
        Targets(scenes.Select(s => s.Objects.Select(o => new ToyRequest(o.Shape, o.Color, o.Position, o.Size)).ToList()).ToList());

    /// <summary>The same targets for what prompts ask for (<see cref="ToyShapes.ParseCaption"/>): a size left open is −100.</summary>
    public static (Tensor Shape, Tensor Color, Tensor Size) Targets(IReadOnlyList<IReadOnlyList<ToyRequest>> requests)
    {
        int cells = requests.Count * ToyShapes.Positions;
        var shape = new long[cells];
        var color = Enumerable.Repeat(Ignore, cells).ToArray();
        var size = Enumerable.Repeat(Ignore, cells).ToArray();
        for (int n = 0; n < requests.Count; n++)
            foreach (var r in requests[n])
            {
                int i = n * ToyShapes.Positions + (int)r.Position;
                (shape[i], color[i], size[i]) = ((long)r.Shape + 1, (long)r.Color, r.Size is { } s ? (long)s : Ignore);
            }
        long[] dims = [requests.Count, ToyShapes.Positions];
        return (tensor(shape, dims), tensor(color, dims), tensor(size, dims));
    }

    /// <summary>Accuracy of <paramref name="model"/> on labelled images.</summary>
    public static ToyRecognizerAccuracy Evaluate(ToyRecognizer model, Tensor images, IReadOnlyList<ToyScene> scenes)
    {
        var seen = model.Recognize(images);
        int cells = 0, objects = 0, shapeRight = 0, colorRight = 0, sizeRight = 0, scenesRight = 0;
        for (int n = 0; n < scenes.Count; n++)
        {
            if (seen[n].Equals(scenes[n])) scenesRight++;
            for (int p = 0; p < ToyShapes.Positions; p++)
            {
                var truth = scenes[n].Objects.FirstOrDefault(o => (int)o.Position == p);
                var guess = seen[n].Objects.FirstOrDefault(o => (int)o.Position == p);
                cells++;
                if (truth?.Shape == guess?.Shape) shapeRight++;
                if (truth is null) continue;
                objects++;
                if (guess?.Color == truth.Color) colorRight++;
                if (guess?.Size == truth.Size) sizeRight++;
            }
        }
        return new((double)shapeRight / cells, (double)colorRight / objects, (double)sizeRight / objects,
            (double)scenesRight / scenes.Count);
    }
}
