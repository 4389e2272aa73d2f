using HyperSd.Diffusion.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Toy;

public sealed record ToyTextPretrainingOptions
{
    public int Steps { get; init; } = 3000;
    public int BatchSize { get; init; } = 128;
    public double LearningRate { get; init; } = 2e-3;
    public int Seed { get; init; }
    /// <summary>Train only the read-out heads on a frozen encoder: a linear probe of what the encoder already binds.</summary>
    public bool Probe { get; init; }
}

/// <summary>How much of each object a linear read-out finds at the last word of its phrase, on held-out captions: cell,
/// shape, colour, size, and all four (<see cref="Whole"/>), for one- and two-object captions apart.</summary>
public sealed record ToyBindingAccuracy(int Objects, double Cell, double Shape, double Color, double Size, double Whole);

/// <summary>
/// Teaches the toy text encoder to bind, the toy analogue of the CLIP pretraining SD's text encoder has before SD is
/// trained: at the last word of each object's phrase ("…square at the bottom <b>right</b>"), linear heads read back that
/// object's cell, shape, colour and size. The encoder is causal (CLIP's mask), so the attributes come before the words
/// of their place and only a position word can carry the whole object; a UNet query at a cell then finds the object
/// drawn there by attending to its place's words. Trained jointly with the UNet from scratch, the committed teacher's
/// encoder never learned this: its two-object scenes have the right attributes in the wrong cells (<see cref="ToyAdherence"/>'s
/// swapped columns). With <see cref="ToyTextPretrainingOptions.Probe"/> the same loop measures what an encoder binds.
/// </summary>
public static class ToyTextEncoderPretraining
{
    static readonly int Cells = Enum.GetValues<ToyPosition>().Length, Shapes = Enum.GetValues<ToyShape>().Length,
        Colors = Enum.GetValues<ToyColor>().Length, Sizes = Enum.GetValues<ToySize>().Length;

    /// <summary>Trains <paramref name="encoder"/> (or only the heads, when probing) on train-split captions and returns
    /// the read-out's accuracy on held-out ones, one and two objects.</summary>
    public static IReadOnlyList<ToyBindingAccuracy> Train(CLIPTextModel encoder, CLIPTokenizer tokenizer, ToyTextPretrainingOptions options,
        Action<int, double>? onStep = null)
    {
        if (options.Steps <= 0 || options.BatchSize <= 0 || options.LearningRate <= 0)
            throw new ArgumentException($"invalid toy text pretraining options: {options}");
        manual_seed(options.Seed);
        int hidden = encoder.Config.HiddenSize;
        using var heads = nn.Linear(hidden, Cells + Shapes + Colors + Sizes);
        var parameters = heads.parameters().Concat(options.Probe ? [] : encoder.parameters()).ToList();
        using var optimizer = optim.AdamW(parameters, options.LearningRate, weight_decay: 0.01);
        var random = new Random(options.Seed);
        if (options.Probe) encoder.eval(); else encoder.train();
        for (int step = 1; step <= options.Steps; step++)
        {
            using var scope = NewDisposeScope();
            var scenes = Enumerable.Range(0, options.BatchSize)
                .Select(_ => ToyShapes.RandomScene(random, split: ToyCaptionSplit.Train)).ToList();
            var (logits, labels) = ReadOut(encoder, heads, tokenizer, scenes, options.Probe);
            var loss = Loss(logits, labels);
            optimizer.zero_grad();
            loss.backward();
            foreach (var group in optimizer.ParamGroups)
                group.LearningRate = options.LearningRate * (0.55 + 0.45 * Math.Cos(Math.PI * step / options.Steps));
            optimizer.step();
            onStep?.Invoke(step, loss.item<float>());
        }
        encoder.eval();
        return [Accuracy(encoder, heads, tokenizer, 1, options.Seed), Accuracy(encoder, heads, tokenizer, 2, options.Seed)];
    }

    /// <summary>Token index of the last word of each object's phrase: captions are "a size colour shape place" joined by
    /// "and", every caption word is one token (<see cref="ToyVocabulary"/>), and token 0 is the start of text.</summary>
    public static IReadOnlyList<int> ObjectTokens(ToyScene scene)
    {
        var tokens = new List<int>();
        int words = 0;
        foreach (var o in scene.Objects)
        {
            words += o.Phrase.Split(' ').Length;
            tokens.Add(words); // the object's last word is word (words − 1), token words
            words++; // "and"
        }
        return tokens;
    }

    static (Tensor Logits, Tensor Labels) ReadOut(CLIPTextModel encoder, nn.Module<Tensor, Tensor> heads, CLIPTokenizer tokenizer,
        IReadOnlyList<ToyScene> scenes, bool frozen)
    {
        using var ids = tokenizer.Encode(scenes.Select(s => s.Caption).ToList());
        Tensor states;
        if (frozen) using (no_grad()) states = encoder.call(ids).LastHiddenState;
        else states = encoder.call(ids).LastHiddenState;
        long length = states.shape[1];
        var picks = new List<long>();
        var labels = new List<long>();
        for (int i = 0; i < scenes.Count; i++)
        {
            var tokens = ObjectTokens(scenes[i]);
            for (int k = 0; k < tokens.Count; k++)
            {
                var o = scenes[i].Objects[k];
                picks.Add(i * length + tokens[k]);
                labels.AddRange([(long)o.Position, (long)o.Shape, (long)o.Color, (long)o.Size]);
            }
        }
        var picked = states.reshape(-1, states.shape[2]).index_select(0, tensor(picks.ToArray()));
        return (heads.call(picked), tensor(labels.ToArray()).reshape(-1, 4));
    }

    static Tensor[] Split(Tensor logits) => logits.split([Cells, Shapes, Colors, Sizes], 1);

    static Tensor Loss(Tensor logits, Tensor labels)
    {
        var parts = Split(logits);
        return Enumerable.Range(0, 4).Select(a => nn.functional.cross_entropy(parts[a], labels[.., a])).Aggregate((x, y) => x + y);
    }

    static ToyBindingAccuracy Accuracy(CLIPTextModel encoder, nn.Module<Tensor, Tensor> heads, CLIPTokenizer tokenizer,
        int objects, int seed)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var random = new Random(seed + 1_000_003 * objects);
        var scenes = Enumerable.Range(0, 2048).Select(_ => ToyShapes.RandomScene(random, objects, ToyCaptionSplit.HeldOut)).ToList();
        var (logits, labels) = ReadOut(encoder, heads, tokenizer, scenes, frozen: true);
        var parts = Split(logits);
        var right = Enumerable.Range(0, 4).Select(a => parts[a].argmax(1).eq(labels[.., a])).ToArray();
        double Mean(Tensor t) => t.to_type(float32).mean().item<float>();
        var whole = right.Aggregate((x, y) => x.logical_and(y));
        return new(objects, Mean(right[0]), Mean(right[1]), Mean(right[2]), Mean(right[3]), Mean(whole));
    }
}
