using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Distillation.SegmentConsistency;

/// <summary>PCM's discriminator head on one UNet feature map: conv 3×3 → GroupNorm → LeakyReLU twice, the second
/// with a residual, then a 1×1 conv to per-pixel logits.</summary>
public sealed class DiscriminatorHead : nn.Module<Tensor, Tensor>
{
    readonly Conv2d conv1;
    readonly GroupNorm norm1;
    readonly Conv2d conv2;
    readonly GroupNorm norm2;
    readonly Conv2d conv_out;

    public DiscriminatorHead(long inChannels, long channels, Device? device = null) : base(nameof(DiscriminatorHead))
    {
        conv1 = nn.Conv2d(inChannels, channels, 3, padding: 1, device: device);
        norm1 = nn.GroupNorm(Groups(channels), channels, device: device);
        conv2 = nn.Conv2d(channels, channels, 3, padding: 1, device: device);
        norm2 = nn.GroupNorm(Groups(channels), channels, device: device);
        conv_out = nn.Conv2d(channels, 1, 1, device: device);
        RegisterComponents();
    }

    /// <summary>PCM uses 32 groups; tiny models have fewer channels, so the largest divisor of the width up to 32.</summary>
    static long Groups(long channels) => Enumerable.Range(1, 32).Last(g => channels % g == 0);

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = LeakyRelu(norm1.call(conv1.call(x)));
        h = LeakyRelu(norm2.call(conv2.call(h))) + h;
        return conv_out.call(h).MoveToOuterDisposeScope();
    }

    /// <summary>LeakyReLU(0.01) with its slope an explicit Scalar held through the call: the one TorchSharp makes from a
    /// double can be finalized while LibTorch still reads it (a TSCD stage failed with "Expected false to be true" from
    /// Scalar::toFloat in leaky_relu; LoraAdapter guards its weight the same way).</summary>
    static Tensor LeakyRelu(Tensor x)
    {
        using var slope = 0.01.ToScalar();
        return x.leaky_relu(slope);
    }

    /// <summary>
    /// The logits of several heads that read one feature map, each head's arithmetic in one call per layer: the first
    /// convs stacked along the output channels (they share the input), the others as grouped convolutions, GroupNorm
    /// with each head's groups. On a small map (the toy world, CPU) 4 heads cost about 4 calls' overhead; fused, one.
    /// </summary>
    public static Tensor[] Fused(IList<DiscriminatorHead> heads, Tensor x)
    {
        if (heads.Count == 1) return [heads[0].call(x)];
        using var scope = NewDisposeScope();
        int n = heads.Count;
        Tensor Cat(Func<DiscriminatorHead, Tensor> part) => cat(heads.Select(part).ToArray());
        Tensor Norm(Tensor h, Func<DiscriminatorHead, GroupNorm> norm) =>
            nn.functional.group_norm(h, n * norm(heads[0]).num_groups, Cat(d => norm(d).weight!), Cat(d => norm(d).bias!),
                norm(heads[0]).eps);
        var h = nn.functional.conv2d(x, Cat(d => d.conv1.weight!), Cat(d => d.conv1.bias!), padding: [1, 1]);
        h = LeakyRelu(Norm(h, d => d.norm1));
        var h2 = nn.functional.conv2d(h, Cat(d => d.conv2.weight!), Cat(d => d.conv2.bias!), padding: [1, 1], groups: n);
        h = LeakyRelu(Norm(h2, d => d.norm2)) + h;
        var logits = nn.functional.conv2d(h, Cat(d => d.conv_out.weight!), Cat(d => d.conv_out.bias!), groups: n);
        return logits.chunk(n, 1).Select(l => l.MoveToOuterDisposeScope()).ToArray();
    }

    /// <summary>PyTorch's default initialisation (uniform ±1/√fan_in for conv weights and biases) from
    /// <paramref name="generator"/>, so a seed fixes the heads; GroupNorm affine ones/zeros.</summary>
    public void Reset(Generator generator)
    {
        using var _ = no_grad();
        foreach (var conv in new[] { conv1, conv2, conv_out })
        {
            double bound = 1 / Math.Sqrt(conv.weight!.numel() / conv.weight.shape[0]);
            conv.weight.uniform_(-bound, bound, generator);
            conv.bias!.uniform_(-bound, bound, generator);
        }
        foreach (var norm in new[] { norm1, norm2 })
        {
            norm.weight!.fill_(1);
            norm.bias!.fill_(0);
        }
    }
}

/// <summary>
/// PCM's adversarial discriminator: the frozen teacher UNet is the backbone, and <c>headsPerFeature</c> independent trainable
/// <see cref="DiscriminatorHead"/>s read each down-block, mid-block and up-block output (PCM: 4 each, 36 for SD1.5; state-dict
/// names heads.{feature}.{head}, as PCM's). Hinge losses: D = mean(relu(1 + D(fake))) + mean(relu(1 − D(real))),
/// G = mean(relu(1 − D(fake))), averaged over all heads.
/// </summary>
public sealed class SegmentDiscriminator : nn.Module
{
    readonly ModuleList<ModuleList<DiscriminatorHead>> heads;

    public int HeadsPerFeature { get; }

    /// <param name="headChannels">Inner width of every head; null = the width of the feature it reads.</param>
    public SegmentDiscriminator(UNet2DConditionConfig unet, int? headChannels, Generator generator, Device? device = null,
        int headsPerFeature = 4) : base(nameof(SegmentDiscriminator))
    {
        HeadsPerFeature = headsPerFeature;
        heads = new ModuleList<ModuleList<DiscriminatorHead>>();
        foreach (var c in FeatureChannels(unet))
            heads.Add(new ModuleList<DiscriminatorHead>(
                Enumerable.Range(0, headsPerFeature).Select(_ => new DiscriminatorHead(c, headChannels ?? c, device)).ToArray()));
        RegisterComponents();
        foreach (var h in heads.SelectMany(f => f)) h.Reset(generator);
    }

    /// <summary>Channels of <see cref="UNetFeatures.All"/>: each down block's output, the mid block's, each up block's.</summary>
    public static IEnumerable<long> FeatureChannels(UNet2DConditionConfig unet)
    {
        var ch = unet.BlockOutChannels;
        IEnumerable<long> down = ch.Select(c => (long)c);
        IEnumerable<long> mid = unet.MidBlockType is null ? [] : [ch[^1]];
        return down.Concat(mid).Concat(ch.Reverse().Select(c => (long)c));
    }

    /// <summary>The backbone: the frozen teacher's features of <paramref name="sample"/> at <paramref name="timesteps"/>.</summary>
    public static UNetFeatures Features(UNet2DConditionModel teacher, Tensor sample, Tensor timesteps, PromptCondition condition)
    {
        var features = new UNetFeatures();
        condition.Predict(teacher, sample, timesteps, features).Dispose();
        return features;
    }

    IEnumerable<Tensor> Logits(UNetFeatures features)
    {
        var all = features.All.ToList();
        if (all.Count != heads.Count)
            throw new ArgumentException($"the discriminator reads {heads.Count} feature maps but the UNet gave {all.Count}");
        return all.SelectMany((f, i) => DiscriminatorHead.Fused(heads[i], f));
    }

    /// <summary>Refuses a checkpoint of another head count, naming the file and both sets of heads (the caller then loads it).
    /// </summary>
    public void CheckHeads(string path)
    {
        // one conv_out per head: their names and shapes tell the head count
        static List<string> Outs(IEnumerable<(string Key, long[] Shape)> all) => all.Where(x => x.Key.EndsWith(".conv_out.weight"))
            .Select(x => $"{x.Key} [{string.Join(", ", x.Shape)}]").Order().ToList();
        var saved = Outs(SafeTensors.ReadHeader(path).Select(kv => (kv.Key, kv.Value.Shape)));
        var expected = Outs(state_dict().Select(kv => (kv.Key, kv.Value.shape)));
        static string Describe(List<string> outs) => $"{outs.Count} heads ({string.Join(", ", outs.Take(2))}, …)";
        if (!saved.SequenceEqual(expected))
            throw new InvalidDataException($"{path}: the checkpoint's discriminator has {Describe(saved)}; this stage's has " +
                $"{HeadsPerFeature} per feature map, {Describe(expected)}: resume with the head count it was written with");
    }

    public Tensor GeneratorLoss(UNetFeatures fake)
    {
        using var scope = NewDisposeScope();
        return stack(Logits(fake).Select(l => nn.functional.relu(1 - l).mean()).ToArray()).mean().MoveToOuterDisposeScope();
    }

    public Tensor DiscriminatorLoss(UNetFeatures fake, UNetFeatures real)
    {
        using var scope = NewDisposeScope();
        var terms = Logits(fake).Zip(Logits(real), (f, r) => nn.functional.relu(1 + f).mean() + nn.functional.relu(1 - r).mean());
        return stack(terms.ToArray()).mean().MoveToOuterDisposeScope();
    }
}
