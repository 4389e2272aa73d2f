using System.Globalization;
using System.Text.Json.Nodes;
using HyperSd.Diffusion.Models.Unets;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Lora;

/// <summary>Where the kept singular values of a merged module go.</summary>
public enum SingularValueSplit
{
    /// <summary>up = U·√S, down = √S·Vᵀ: both factors carry the same norm (better conditioned in half precision,
    /// and symmetric gradients if the merged LoRA is trained further, e.g. by the DMD stage).</summary>
    Balanced,

    /// <summary>up = U·S, down = Vᵀ (orthonormal rows), as kohya's svd_merge_lora.py does.</summary>
    AllInUp,
}

/// <summary>How the merged LoRA is re-factorised.</summary>
public sealed record LoraMergeOptions
{
    /// <summary>Target rank of every module (Linear and 1×1 conv; k×k convs too unless <see cref="ConvRank"/> is set).</summary>
    public int Rank { get; init; } = 64;

    /// <summary>Target rank of convolutions with a kernel larger than 1×1 (kohya's new_conv_rank); null: <see cref="Rank"/>.</summary>
    public int? ConvRank { get; init; }

    /// <summary>Per-module target ranks by module path, overriding <see cref="Rank"/> and <see cref="ConvRank"/>.</summary>
    public IReadOnlyDictionary<string, int>? RankPattern { get; init; }

    /// <summary>When true, a target rank above a module's maximum (min of its out and flattened in dimensions) is
    /// lowered to that maximum, as kohya does; when false (the default) it is an error.</summary>
    public bool ClampRankToModule { get; init; }

    public SingularValueSplit Split { get; init; } = SingularValueSplit.Balanced;

    /// <summary>Element type of the merged factors (computation is in float64 whatever this is).</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

    public Device? Device { get; init; }
}

/// <summary>One module of a merge: its base weight shape, the target rank and its maximum, and the energy of the
/// weighted delta (Σσ², its squared Frobenius norm) with the part the truncation discarded (Σ of the discarded σ²,
/// which by Eckart–Young is exactly the squared Frobenius error of the merged factors).</summary>
public sealed record LoraModuleMergeReport(string Module, long[] WeightShape, int Rank, int MaxRank, double Energy, double DiscardedEnergy)
{
    public double DiscardedFraction => Energy > 0 ? DiscardedEnergy / Energy : 0;
}

/// <summary>A merge's outcome: per module, and in total (discarded energy over total energy across modules).</summary>
public sealed record LoraMergeReport(
    IReadOnlyList<LoraModuleMergeReport> Modules, IReadOnlyList<string> Sources, IReadOnlyList<double> Weights)
{
    public double Energy => Modules.Sum(m => m.Energy);
    public double DiscardedEnergy => Modules.Sum(m => m.DiscardedEnergy);
    public double DiscardedFraction => Energy > 0 ? DiscardedEnergy / Energy : 0;
    public LoraModuleMergeReport Worst => Modules.MaxBy(m => m.DiscardedFraction)!;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Modules.Count} modules, ranks {Modules.Min(m => m.Rank)}–{Modules.Max(m => m.Rank)}, discarded energy " +
        $"{DiscardedFraction:0.####e+0} of {Energy:0.####e+0} (worst '{Worst.Module}' {Worst.DiscardedFraction:0.####e+0})");
}

/// <summary>The unified LoRA and its report. Owns (disposes) the adapter.</summary>
public sealed class MergedLora(LoraAdapter adapter, LoraMergeReport report) : IDisposable
{
    public LoraAdapter Adapter { get; } = adapter;
    public LoraMergeReport Report { get; } = report;

    /// <summary>Writes the LoRA through <see cref="LoraFormats.Save"/> with the merge recorded in the metadata
    /// (<c>hypersd_merge</c>: sources, weights, discarded energy; kohya files also get sd-scripts' minimal
    /// <c>ss_network_*</c> fields).</summary>
    public void Save(string path, LoraFileFormat format, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>());
        meta["hypersd_merge"] = new JsonObject
        {
            ["sources"] = new JsonArray(Report.Sources.Select(s => (JsonNode?)JsonValue.Create(s)).ToArray()),
            ["weights"] = new JsonArray(Report.Weights.Select(w => (JsonNode?)JsonValue.Create(w)).ToArray()),
            ["max_rank"] = Report.Modules.Max(m => m.Rank),
            ["discarded_energy_fraction"] = Report.DiscardedFraction,
        }.ToJsonString();
        if (format == LoraFileFormat.Kohya)
        {
            meta.TryAdd("ss_network_module", "networks.lora");
            meta.TryAdd("ss_network_dim", Adapter.Rank.ToString(CultureInfo.InvariantCulture));
            meta.TryAdd("ss_network_alpha", Adapter.Alpha.ToString(CultureInfo.InvariantCulture));
        }
        LoraFormats.Save(Adapter, path, format, meta);
    }

    public void Dispose() => Adapter.Dispose();
}

/// <summary>
/// The LoRA merger: the weighted sum of several LoRAs' deltas (Δ = Σᵢ wᵢ · (αᵢ/rᵢ) · upᵢ @ downᵢ per module, in
/// float64), re-factorised per module by truncated SVD to a target rank with alpha = rank (scale 1), as kohya's
/// svd_merge_lora.py does; or fused exactly into a base model. A k×k convolution's delta is flattened to
/// (out, in·k·k), which is how <see cref="LoraLayer.Delta"/> and kohya treat it: down keeps the kernel, up is 1×1.
/// </summary>
public static class LoraMerge
{
    /// <summary>Merges <paramref name="loras"/> (all made for <paramref name="baseModel"/>, all on the same modules)
    /// with <paramref name="weights"/> and re-factorises every module to its target rank.</summary>
    /// <param name="names">How errors and the report name the LoRAs (e.g. file paths); default "LoRA i".</param>
    public static MergedLora Merge(nn.Module baseModel, IReadOnlyList<LoraAdapter> loras, IReadOnlyList<double> weights,
        LoraMergeOptions? options = null, IReadOnlyList<string>? names = null)
    {
        options ??= new LoraMergeOptions();
        names = Names(loras, names);
        var modules = Validate(baseModel, loras, weights, names, sameModules: true);
        var ranks = TargetRanks(modules, options);
        var device = options.Device ?? CPU;

        var reports = new List<LoraModuleMergeReport>();
        var layers = new List<(string, LoraLayer)>();
        try
        {
            foreach (var (path, module) in modules)
            {
                var (rank, maxRank) = ranks[path];
                var (up, down, energy, discarded) = Factorise(loras.Select(l => l.Layers[path]).ToList(), weights, rank, options.Split);
                using (up)
                using (down)
                {
                    var layer = new LoraLayer(module, rank, rank, device, options.DType);
                    layers.Add((path, layer));
                    using var _ = no_grad();
                    layer.UpWeight.copy_(up.reshape(layer.UpWeight.shape));
                    layer.DownWeight.copy_(down.reshape(layer.DownWeight.shape));
                }
                reports.Add(new LoraModuleMergeReport(path, WeightOf(module).shape, rank, maxRank, energy, discarded));
            }
        }
        catch
        {
            foreach (var (_, layer) in layers) layer.Dispose();
            throw;
        }
        return new MergedLora(LoraAdapter.FromLayers(layers), new LoraMergeReport(reports, names, [.. weights]));
    }

    /// <summary>Loads each file with <see cref="LoraFormats.Load"/> against <paramref name="baseModel"/> (which names
    /// the file, key and shapes when a LoRA was made for another base) and merges them.</summary>
    public static MergedLora Merge(nn.Module baseModel, IReadOnlyList<string> paths, IReadOnlyList<double> weights,
        LoraMergeOptions? options = null)
    {
        CheckWeights(paths.Count, weights);
        var loras = new List<LoraAdapter>();
        try
        {
            foreach (var path in paths) loras.Add(LoraFormats.Load(path, baseModel));
            return Merge(baseModel, loras, weights, options, paths);
        }
        finally
        {
            foreach (var l in loras) l.Dispose();
        }
    }

    /// <summary>The exact weighted delta of one module, Σᵢ wᵢ · (αᵢ/rᵢ) · upᵢ @ downᵢ, in float64 and the base
    /// weight's shape.</summary>
    public static Tensor WeightedDelta(IReadOnlyList<LoraAdapter> loras, IReadOnlyList<double> weights, string module)
    {
        CheckWeights(loras.Count, weights);
        using var scope = NewDisposeScope();
        var layers = loras.Select(l => l.Layers.TryGetValue(module, out var layer) ? layer : null).ToList();
        var present = layers.Where(l => l is not null).Select(l => l!).ToList();
        if (present.Count == 0) throw new ArgumentException($"no LoRA adapts module '{module}'");
        var (left, right) = Factors(layers.Select((l, i) => (l, weights[i])).Where(p => p.l is not null)
            .Select(p => (p.l!, p.Item2)).ToList());
        return left.matmul(right).reshape(present[0].BaseWeightShape).MoveToOuterDisposeScope();
    }

    /// <summary>Adds Σᵢ wᵢ · Δᵢ to the weights of <paramref name="model"/> (computed in float64, then cast to each
    /// weight's dtype): the exact weighted sum, no truncation. The LoRAs may adapt different modules.</summary>
    public static void Fuse(nn.Module model, IReadOnlyList<LoraAdapter> loras, IReadOnlyList<double> weights)
    {
        var names = Names(loras, null);
        var modules = Validate(model, loras, weights, names, sameModules: false);
        using var _ = no_grad();
        foreach (var (path, module) in modules)
        {
            using var scope = NewDisposeScope();
            var weight = WeightOf(module);
            var delta = WeightedDelta(loras, weights, path);
            weight.copy_(weight.to(float64).add(delta.to(weight.device)).to(weight.dtype));
        }
    }

    /// <summary>Fuses the (merged) LoRA into <paramref name="unet"/> with weight <paramref name="scale"/> and writes
    /// the standalone UNet in the diffusers layout (<c>config.json</c>, <c>diffusion_pytorch_model.safetensors</c>).</summary>
    public static void FuseAndSave(UNet2DConditionModel unet, LoraAdapter lora, string dir, double scale = 1.0)
    {
        Fuse(unet, [lora], [scale]);
        unet.SavePretrained(dir);
    }

    /// <summary>The truncated SVD of one module's weighted delta L @ R (L: out × Σrᵢ, R: Σrᵢ × in·k·k). When Σrᵢ is
    /// below both dimensions, the SVD is taken of the small core of the two QR factorisations (L = Qₗ·Rₗ,
    /// Rᵀ = Qᵣ·Rᵣ, so Δ = Qₗ·(Rₗ·Rᵣᵀ)·Qᵣᵀ); otherwise of the dense delta. Both are exact in float64.</summary>
    static (Tensor Up, Tensor Down, double Energy, double Discarded) Factorise(
        IReadOnlyList<LoraLayer> layers, IReadOnlyList<double> weights, int rank, SingularValueSplit split)
    {
        using var scope = NewDisposeScope();
        var (left, right) = Factors(layers.Select((l, i) => (l, weights[i])).ToList());
        long inner = left.shape[1];
        Tensor u, s, vh;
        if (inner < Math.Min(left.shape[0], right.shape[1]))
        {
            var (ql, rl) = linalg.qr(left);
            var (qr, rr) = linalg.qr(right.t());
            var (uc, sc, vhc) = linalg.svd(rl.matmul(rr.t()), fullMatrices: false);
            (u, s, vh) = (ql.matmul(uc), sc, vhc.matmul(qr.t()));
        }
        else
        {
            (u, s, vh) = linalg.svd(left.matmul(right), fullMatrices: false);
        }
        var energy = s.square().sum().item<double>();
        var discarded = s.shape[0] > rank ? s[TensorIndex.Slice(rank)].square().sum().item<double>() : 0.0;
        long k = Math.Min(rank, s.shape[0]);
        var keptU = u[TensorIndex.Colon, TensorIndex.Slice(0, k)];
        var keptS = s[TensorIndex.Slice(0, k)];
        var keptVh = vh[TensorIndex.Slice(0, k)];
        if (k < rank)   // the LoRAs' ranks sum to less than the target rank: the extra components are zero
        {
            keptU = nn.functional.pad(keptU, [0, rank - k]);
            keptS = nn.functional.pad(keptS, [0, rank - k]);
            keptVh = nn.functional.pad(keptVh, [0, 0, 0, rank - k]);
        }
        var (up, down) = split == SingularValueSplit.Balanced
            ? (keptU * keptS.sqrt(), keptS.sqrt().unsqueeze(1) * keptVh)
            : (keptU * keptS, keptVh);
        return (up.MoveToOuterDisposeScope(), down.MoveToOuterDisposeScope(), energy, discarded);
    }

    /// <summary>[w₁·s₁·up₁ | w₂·s₂·up₂ | …] and [down₁; down₂; …] in float64 (s = alpha / rank), so that their
    /// product is the weighted delta flattened to (out, in·k·k).</summary>
    static (Tensor Left, Tensor Right) Factors(IReadOnlyList<(LoraLayer Layer, double Weight)> parts)
    {
        var left = new List<Tensor>();
        var right = new List<Tensor>();
        foreach (var (layer, weight) in parts)
        {
            var up = layer.UpWeight.detach().to(float64, CPU);
            var down = layer.DownWeight.detach().to(float64, CPU);
            left.Add(up.reshape(up.shape[0], layer.Rank).mul(weight * layer.Scale));
            right.Add(down.reshape(layer.Rank, -1));
        }
        return (cat(left, 1), cat(right, 0));
    }

    /// <summary>Checks the inputs; returns the base module of every adapted path, in path order.</summary>
    static List<(string Path, nn.Module<Tensor, Tensor> Module)> Validate(nn.Module baseModel, IReadOnlyList<LoraAdapter> loras,
        IReadOnlyList<double> weights, IReadOnlyList<string> names, bool sameModules)
    {
        if (loras.Count == 0) throw new ArgumentException("no LoRAs to merge");
        CheckWeights(loras.Count, weights);
        if (sameModules)
        {
            var reference = loras[0].Layers.Keys.ToHashSet(StringComparer.Ordinal);
            for (int i = 1; i < loras.Count; i++)
            {
                var other = loras[i].Layers.Keys.ToHashSet(StringComparer.Ordinal);
                var missing = reference.Except(other).Order(StringComparer.Ordinal).ToList();
                var extra = other.Except(reference).Order(StringComparer.Ordinal).ToList();
                if (missing.Count + extra.Count > 0)
                    throw new ArgumentException($"the LoRAs target different modules: {names[i]} " +
                        (missing.Count > 0 ? $"lacks {List(missing)} that {names[0]} has" : "") +
                        (missing.Count > 0 && extra.Count > 0 ? " and " : "") +
                        (extra.Count > 0 ? $"has {List(extra)} that {names[0]} lacks" : ""));
            }
        }
        var all = baseModel.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
        var result = new SortedDictionary<string, nn.Module<Tensor, Tensor>>(StringComparer.Ordinal);
        for (int i = 0; i < loras.Count; i++)
            foreach (var (path, layer) in loras[i].Layers.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                if (!all.TryGetValue(path, out var m) || m is not (Linear or Conv2d))
                    throw new ArgumentException($"{names[i]}: module '{path}' (key lora_unet_{path.Replace('.', '_')}) has no " +
                        $"Linear/Conv2d counterpart in the base {baseModel.GetType().Name}");
                var shape = WeightOf((nn.Module<Tensor, Tensor>)m).shape;
                if (!shape.SequenceEqual(layer.BaseWeightShape))
                    throw new ArgumentException($"{names[i]}: module '{path}' (key lora_unet_{path.Replace('.', '_')}) was made " +
                        $"for a weight of shape {Shape(layer.BaseWeightShape)}; the base has {Shape(shape)} (a LoRA for another base?)");
                result[path] = (nn.Module<Tensor, Tensor>)m;
            }
        return result.Select(kv => (kv.Key, kv.Value)).ToList();
    }

    static void CheckWeights(int count, IReadOnlyList<double> weights)
    {
        if (weights.Count != count)
            throw new ArgumentException($"{weights.Count} weights for {count} LoRAs: give one weight per LoRA");
        var bad = weights.Select((w, i) => (w, i)).Where(p => !double.IsFinite(p.w)).ToList();
        if (bad.Count > 0) throw new ArgumentException($"weight {bad[0].i} is {bad[0].w}, not a finite number");
        if (weights.All(w => w == 0)) throw new ArgumentException("all merge weights are zero: the merged LoRA would be empty");
    }

    /// <summary>The target rank and the maximum rank, min(out, in·k·k), of every module; throws naming the module and
    /// the limits when a rank is out of range (unless clamping), or when the rank pattern names an unknown module.</summary>
    static Dictionary<string, (int Rank, int Max)> TargetRanks(List<(string Path, nn.Module<Tensor, Tensor> Module)> modules,
        LoraMergeOptions options)
    {
        var paths = modules.Select(m => m.Path).ToHashSet(StringComparer.Ordinal);
        var unknown = options.RankPattern?.Keys.Where(k => !paths.Contains(k)).Order(StringComparer.Ordinal).ToList() ?? [];
        if (unknown.Count > 0) throw new ArgumentException($"the rank pattern names modules the LoRAs do not adapt: {List(unknown)}");
        var result = new Dictionary<string, (int, int)>(StringComparer.Ordinal);
        foreach (var (path, module) in modules)
        {
            var shape = WeightOf(module).shape;
            long flatIn = shape.Skip(1).Aggregate(1L, (a, b) => a * b);
            int max = (int)Math.Min(shape[0], flatIn);
            bool spatialConv = shape.Length == 4 && (shape[2] > 1 || shape[3] > 1);
            int rank = options.RankPattern is not null && options.RankPattern.TryGetValue(path, out var r) ? r
                : spatialConv && options.ConvRank is int c ? c : options.Rank;
            if (rank <= 0 || (rank > max && !options.ClampRankToModule))
                throw new ArgumentOutOfRangeException(nameof(options), rank,
                    $"target rank {rank} for module '{path}' is out of range: its weight {Shape(shape)} flattens to " +
                    $"{shape[0]} × {flatIn}, so the rank must be in [1, {max}]");
            result[path] = (Math.Min(rank, max), max);
        }
        return result;
    }

    static IReadOnlyList<string> Names(IReadOnlyList<LoraAdapter> loras, IReadOnlyList<string>? names)
    {
        if (names is not null && names.Count != loras.Count)
            throw new ArgumentException($"{names.Count} names for {loras.Count} LoRAs");
        return names ?? loras.Select((_, i) => $"LoRA {i}").ToList();
    }

    static Parameter WeightOf(nn.Module<Tensor, Tensor> m) => m switch
    {
        Linear l => l.weight!,
        Conv2d c => c.weight!,
        _ => throw new InvalidOperationException(),
    };

    static string Shape(long[] shape) => "[" + string.Join(", ", shape) + "]";

    static string List(IReadOnlyList<string> items) =>
        "[" + string.Join(", ", items.Take(8).Select(s => $"'{s}'")) + (items.Count > 8 ? $", … {items.Count - 8} more" : "") + "]";
}
