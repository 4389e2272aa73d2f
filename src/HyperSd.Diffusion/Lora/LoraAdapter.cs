using System.Text.RegularExpressions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Lora;

/// <summary>Which modules get a LoRA, its rank and alpha (scale = alpha / rank).</summary>
public sealed record LoraConfig(int Rank = 64, double Alpha = 8, IReadOnlyList<string>? TargetModules = null)
{
    /// <summary>The LCM/PCM target list: attention projections, transformer projections, feed-forward,
    /// resnet convs and time projections, down/up-sampler convs.</summary>
    public static readonly IReadOnlyList<string> LcmTargets =
    [
        "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
        "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
    ];

    public IReadOnlyList<string> Targets => TargetModules ?? LcmTargets;

    /// <summary>PEFT's rule: a pattern matches a module path equal to it or ending in "." + it; a pattern
    /// starting with "re:" is a regular expression over the whole path.</summary>
    public bool Matches(string path) => Targets.Any(p => p.StartsWith("re:", StringComparison.Ordinal)
        ? Regex.IsMatch(path, "^(" + p[3..] + ")$")
        : path == p || path.EndsWith("." + p, StringComparison.Ordinal));
}

/// <summary>
/// The low-rank update of one Linear or Conv2d: Δy = (alpha / rank) · up(down(x)). For a convolution, down has the
/// base kernel, stride and padding and up is 1×1, as kohya and PEFT do.
/// </summary>
public sealed class LoraLayer : nn.Module<Tensor, Tensor>
{
    public readonly nn.Module<Tensor, Tensor> lora_down;
    public readonly nn.Module<Tensor, Tensor> lora_up;

    public int Rank { get; }
    public double Alpha { get; }
    public double Scale => Alpha / Rank;
    public long[] BaseWeightShape { get; }

    public LoraLayer(nn.Module<Tensor, Tensor> baseLayer, int rank, double alpha, Device? device = null, ScalarType? dtype = null)
        : base(nameof(LoraLayer))
    {
        Rank = rank;
        Alpha = alpha;
        switch (baseLayer)
        {
            case Linear l:
                BaseWeightShape = l.weight!.shape;
                device ??= l.weight.device; dtype ??= l.weight.dtype;
                lora_down = nn.Linear(l.in_features, rank, hasBias: false, device: device, dtype: dtype);
                lora_up = nn.Linear(rank, l.out_features, hasBias: false, device: device, dtype: dtype);
                break;
            case Conv2d c:
                BaseWeightShape = c.weight!.shape;
                device ??= c.weight.device; dtype ??= c.weight.dtype;
                if (c.groups != 1) throw new NotSupportedException("LoRA on grouped convolutions is not supported");
                lora_down = nn.Conv2d(c.in_channels, rank, (c.kernel_size[0], c.kernel_size[1]),
                    stride: (c.stride[0], c.stride[1]), padding: (c.padding![0], c.padding[1]),
                    dilation: (c.dilation[0], c.dilation[1]), bias: false, device: device, dtype: dtype);
                lora_up = nn.Conv2d(rank, c.out_channels, 1, bias: false, device: device, dtype: dtype);
                break;
            default:
                throw new NotSupportedException($"LoRA targets Linear and Conv2d modules, not {baseLayer.GetType().Name}");
        }
        RegisterComponents();
        ResetParameters();
    }

    /// <summary>PEFT's initialisation: down Kaiming-uniform, up zero, so a new adapter changes nothing.</summary>
    public void ResetParameters()
    {
        using var _ = no_grad();
        nn.init.kaiming_uniform_(Weight(lora_down), a: Math.Sqrt(5));
        nn.init.zeros_(Weight(lora_up));
    }

    public Parameter DownWeight => Weight(lora_down);
    public Parameter UpWeight => Weight(lora_up);

    /// <summary>Δ(x) in the base's dtype; LoRA weights of another dtype (fp32 master weights on a bf16 base) compute in
    /// theirs.</summary>
    public override Tensor forward(Tensor x)
    {
        var dtype = DownWeight.dtype;
        if (x.dtype == dtype) return lora_up.call(lora_down.call(x)).mul(Scale);
        using var scope = NewDisposeScope();
        return lora_up.call(lora_down.call(x.to(dtype))).mul(Scale).to(x.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>The dense update to the base weight, (alpha / rank) · up @ down, in the base weight's shape.</summary>
    public Tensor Delta()
    {
        var up = UpWeight.reshape(UpWeight.shape[0], Rank);
        var down = DownWeight.reshape(Rank, -1);
        return up.matmul(down).reshape(BaseWeightShape).mul(Scale);
    }

    static Parameter Weight(nn.Module<Tensor, Tensor> m) => m switch
    {
        Linear l => l.weight!,
        Conv2d c => c.weight!,
        _ => throw new InvalidOperationException(),
    };
}

/// <summary>
/// A set of LoRA layers for one model, keyed by module path ("down_blocks.0.attentions.0.proj_in"). It leaves the base
/// model's module tree (and so its state-dict keys) untouched: attached, it adds its output through forward hooks;
/// fused, it is folded into the base weights.
/// </summary>
public sealed class LoraAdapter : nn.Module
{
    readonly Dictionary<string, LoraLayer> layers = new(StringComparer.Ordinal);
    readonly List<IDisposable> hooks = [];

    public IReadOnlyDictionary<string, LoraLayer> Layers => layers;
    public int Rank { get; }
    public double Alpha { get; }

    /// <summary>Multiplier applied on top of alpha/rank while attached (the adapter weight / "LoRA scale").</summary>
    public double Weight { get; set; } = 1.0;
    public bool IsAttached => hooks.Count > 0;

    LoraAdapter(int rank, double alpha) : base(nameof(LoraAdapter)) { Rank = rank; Alpha = alpha; }

    /// <summary>Creates fresh layers on every module of <paramref name="model"/> that the config targets.</summary>
    public static LoraAdapter Create(nn.Module model, LoraConfig config, Device? device = null, ScalarType? dtype = null)
    {
        var adapter = new LoraAdapter(config.Rank, config.Alpha);
        foreach (var (path, module) in model.named_modules())
            if (module is Linear or Conv2d && config.Matches(path))
                adapter.Add(path, new LoraLayer((nn.Module<Tensor, Tensor>)module, config.Rank, config.Alpha, device, dtype));
        if (adapter.layers.Count == 0)
            throw new ArgumentException(
                $"no Linear/Conv2d module of {model.GetType().Name} matches the LoRA targets [{string.Join(", ", config.Targets)}]");
        return adapter;
    }

    /// <summary>An adapter with given layers (used by the file loaders); layers may differ in rank and alpha.</summary>
    internal static LoraAdapter FromLayers(IEnumerable<(string Path, LoraLayer Layer)> layers)
    {
        var list = layers.ToList();
        var adapter = new LoraAdapter(list.Count == 0 ? 0 : list.Max(l => l.Layer.Rank), list.Count == 0 ? 0 : list[0].Layer.Alpha);
        foreach (var (path, layer) in list) adapter.Add(path, layer);
        return adapter;
    }

    void Add(string path, LoraLayer layer)
    {
        layers[path] = layer;
        register_module(path.Replace('.', '_'), layer);
    }

    /// <summary>Makes <paramref name="model"/> compute base(x) + weight · Δ(x) on every adapted module.</summary>
    public void Attach(nn.Module model)
    {
        if (IsAttached) throw new InvalidOperationException("this LoRA adapter is already attached");
        var modules = Resolve(model);
        foreach (var (path, layer) in layers)
        {
            var target = modules[path];
            var remover = target.register_forward_hook((_, x, y) =>
            {
                // an explicit Scalar held to the end of the call: an implicit one from the double can be finalized while
                // LibTorch still reads it (seen as "Expected false to be true" from Scalar::toFloat mid-evaluation)
                using var weight = Weight.ToScalar();
                return y.add(layer.call(x), weight);
            });
            hooks.Add(new HookHandle(remover.remove));
        }
    }

    public void Detach()
    {
        foreach (var h in hooks) h.Dispose();
        hooks.Clear();
    }

    /// <summary>W += scale · (alpha / rank) · up @ down on every adapted module (the adapter must not be attached too).</summary>
    public void Fuse(nn.Module model, double scale = 1.0) => AddDeltas(model, scale);

    /// <summary>Undoes <see cref="Fuse"/> with the same scale (exact up to fp32 rounding).</summary>
    public void Unfuse(nn.Module model, double scale = 1.0) => AddDeltas(model, -scale);

    void AddDeltas(nn.Module model, double scale)
    {
        var modules = Resolve(model);
        using var _ = no_grad();
        foreach (var (path, layer) in layers)
        {
            var weight = modules[path] switch { Linear l => l.weight!, Conv2d c => c.weight!, _ => throw new InvalidOperationException() };
            using var delta = layer.Delta();
            weight.add_(delta.to(weight.dtype, weight.device), alpha: scale);
        }
    }

    /// <summary>Freezes every parameter of the base model; only LoRA parameters train.</summary>
    public static void FreezeBase(nn.Module model)
    {
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    Dictionary<string, nn.Module<Tensor, Tensor>> Resolve(nn.Module model)
    {
        var all = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
        var result = new Dictionary<string, nn.Module<Tensor, Tensor>>(StringComparer.Ordinal);
        foreach (var (path, layer) in layers)
        {
            if (!all.TryGetValue(path, out var m) || m is not (Linear or Conv2d))
                throw new ArgumentException($"LoRA module '{path}' has no Linear/Conv2d counterpart in {model.GetType().Name}");
            var shape = m is Linear l ? l.weight!.shape : ((Conv2d)m).weight!.shape;
            if (!shape.SequenceEqual(layer.BaseWeightShape))
                throw new ArgumentException(
                    $"LoRA module '{path}' was made for weight shape [{string.Join(", ", layer.BaseWeightShape)}], " +
                    $"the model has [{string.Join(", ", shape)}]");
            result[path] = (nn.Module<Tensor, Tensor>)m;
        }
        return result;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) Detach();
        base.Dispose(disposing);
    }

    sealed class HookHandle(Action remove) : IDisposable
    {
        public void Dispose() => remove();
    }
}
