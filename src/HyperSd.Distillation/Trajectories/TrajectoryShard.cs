using System.Globalization;
using HyperSd.Diffusion.IO;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Trajectories;

/// <summary>
/// Teacher ODE steps for consistency distillation, one row per sample: the noisy latent x_t at solver-grid index
/// <see cref="GridIndices"/> (timestep <see cref="Timesteps"/>), the guidance w the teacher used, the condition
/// (token ids, and the dataset row it came from) and the teacher's x_{t−s} at <see cref="PrevTimesteps"/>.
/// Stored as one safetensors file; its metadata records the grid it was made on.
/// </summary>
public sealed class TrajectoryShard : IDisposable
{
    public Tensor NoisyLatents { get; }
    public Tensor Timesteps { get; }
    public Tensor GridIndices { get; }
    public Tensor Guidance { get; }
    public Tensor InputIds { get; }
    public Tensor DatasetIndices { get; }
    public Tensor PrevLatents { get; }
    public Tensor PrevTimesteps { get; }

    /// <summary>The solver grid the rows are on (num_train_timesteps / solver steps).</summary>
    public int NumTrainTimesteps { get; }
    public int SolverSteps { get; }

    public long Count => Timesteps.shape[0];

    public TrajectoryShard(Tensor noisyLatents, Tensor timesteps, Tensor gridIndices, Tensor guidance, Tensor inputIds,
        Tensor datasetIndices, Tensor prevLatents, Tensor prevTimesteps, int numTrainTimesteps, int solverSteps)
    {
        long n = timesteps.shape[0];
        var parts = new (string Name, Tensor T)[]
        {
            (XtKey, noisyLatents), (TKey, timesteps), (GridKey, gridIndices), (WKey, guidance), (IdsKey, inputIds),
            (DatasetKey, datasetIndices), (XprevKey, prevLatents), (TprevKey, prevTimesteps),
        };
        foreach (var (name, t) in parts)
            if (t.dim() == 0 || t.shape[0] != n)
                throw new ArgumentException(
                    $"trajectory shard parts disagree: '{name}' has shape [{string.Join(", ", t.shape)}], expected {n} rows");
        if (!noisyLatents.shape.SequenceEqual(prevLatents.shape))
            throw new ArgumentException($"trajectory shard: x_t [{string.Join(", ", noisyLatents.shape)}] " +
                                        $"and x_prev [{string.Join(", ", prevLatents.shape)}] differ in shape");
        NoisyLatents = noisyLatents; Timesteps = timesteps; GridIndices = gridIndices; Guidance = guidance; InputIds = inputIds;
        DatasetIndices = datasetIndices; PrevLatents = prevLatents; PrevTimesteps = prevTimesteps;
        NumTrainTimesteps = numTrainTimesteps; SolverSteps = solverSteps;
    }

    const string XtKey = "noisy_latents", TKey = "timesteps", GridKey = "grid_indices", WKey = "guidance", IdsKey = "input_ids",
        DatasetKey = "dataset_indices", XprevKey = "prev_latents", TprevKey = "prev_timesteps";

    public void Save(string path) => SafeTensors.Save(path, new Dictionary<string, Tensor>
    {
        [XtKey] = NoisyLatents, [TKey] = Timesteps, [GridKey] = GridIndices, [WKey] = Guidance, [IdsKey] = InputIds,
        [DatasetKey] = DatasetIndices, [XprevKey] = PrevLatents, [TprevKey] = PrevTimesteps,
    }, new Dictionary<string, string>
    {
        ["format"] = "hypersd-trajectories",
        ["num_train_timesteps"] = NumTrainTimesteps.ToString(CultureInfo.InvariantCulture),
        ["solver_steps"] = SolverSteps.ToString(CultureInfo.InvariantCulture),
    });

    public static TrajectoryShard Load(string path)
    {
        var meta = SafeTensors.ReadMetadata(path);
        var tensors = SafeTensors.Load(path);
        Tensor Get(string key) => tensors.TryGetValue(key, out var t) ? t
            : throw new InvalidDataException($"{path}: trajectory shard lacks tensor '{key}'");
        int Meta(string key) => meta.TryGetValue(key, out var v) && int.TryParse(v, CultureInfo.InvariantCulture, out var i) ? i
            : throw new InvalidDataException($"{path}: trajectory shard metadata lacks integer '{key}'");
        return new TrajectoryShard(Get(XtKey), Get(TKey), Get(GridKey), Get(WKey), Get(IdsKey), Get(DatasetKey), Get(XprevKey),
            Get(TprevKey), Meta("num_train_timesteps"), Meta("solver_steps"));
    }

    /// <summary>Joins shards made on the same grid (the trainer samples from their union).</summary>
    public static TrajectoryShard Concat(IReadOnlyList<TrajectoryShard> shards)
    {
        if (shards.Count == 0) throw new ArgumentException("no trajectory shards given");
        var first = shards[0];
        foreach (var s in shards)
            if (s.NumTrainTimesteps != first.NumTrainTimesteps || s.SolverSteps != first.SolverSteps)
                throw new ArgumentException("trajectory shards were made on different grids: " +
                                            $"{first.NumTrainTimesteps}/{first.SolverSteps} and {s.NumTrainTimesteps}/{s.SolverSteps}");
        Tensor Cat(Func<TrajectoryShard, Tensor> part) => cat(shards.Select(part).ToArray());
        return new TrajectoryShard(Cat(s => s.NoisyLatents), Cat(s => s.Timesteps), Cat(s => s.GridIndices), Cat(s => s.Guidance),
            Cat(s => s.InputIds), Cat(s => s.DatasetIndices), Cat(s => s.PrevLatents), Cat(s => s.PrevTimesteps),
            first.NumTrainTimesteps, first.SolverSteps);
    }

    public void Dispose()
    {
        foreach (var t in new[] { NoisyLatents, Timesteps, GridIndices, Guidance, InputIds, DatasetIndices, PrevLatents, PrevTimesteps })
            t.Dispose();
    }
}
