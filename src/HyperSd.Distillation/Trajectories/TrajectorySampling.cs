using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Data;
using HyperSd.Distillation.SegmentConsistency;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Trajectories;

/// <summary>What to generate: <paramref name="Count"/> samples on a <paramref name="SolverSteps"/>-step DDIM grid, with
/// guidance w ~ U[<paramref name="GuidanceMin"/>, <paramref name="GuidanceMax"/>] (PCM: [4, 5] for SD1.5, [6, 7] for
/// SDXL), a share of captions replaced by the empty prompt, drawn from one generator seeded with <paramref name="Seed"/>.</summary>
public sealed record TrajectoryOptions(
    int Count, long Seed = 0, int SolverSteps = 50, double GuidanceMin = 4, double GuidanceMax = 5, int BatchSize = 16,
    double EmptyPromptProbability = 0)
{
    public void Validate()
    {
        if (Count < 1) throw new ArgumentOutOfRangeException(nameof(Count), $"trajectory count must be at least 1, got {Count}");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), $"batch size must be at least 1, got {BatchSize}");
        if (GuidanceMax < GuidanceMin) throw new ArgumentException($"guidance range [{GuidanceMin}, {GuidanceMax}] is empty");
        if (EmptyPromptProbability is < 0 or > 1)
            throw new ArgumentOutOfRangeException(nameof(EmptyPromptProbability),
                $"empty-prompt probability must be in [0, 1], got {EmptyPromptProbability}");
    }
}

/// <summary>
/// The teacher's side of consistency distillation: noise data latents to x_t at a random solver-grid timestep and
/// take one teacher DDIM step t → t − s with classifier-free guidance in the LCM form
/// x̂0 = x0_c + w·(x0_c − x0_u), ε̂ = ε_c + w·(ε_c − ε_u), the unconditional branch being the conditioner's (the empty
/// prompt for SD1.x, zeros for SDXL).
/// </summary>
public static class TrajectorySampling
{
    /// <param name="conditioner">The teacher's text side; its empty prompt replaces dropped captions.</param>
    public static TrajectoryShard Generate(UNet2DConditionModel teacher, PromptConditioner conditioner, DDPMScheduler scheduler,
        LatentDataset dataset, TrajectoryOptions options, CancellationToken cancellationToken = default,
        Action<int>? progress = null)
    {
        options.Validate();
        if (dataset.Count == 0) throw new ArgumentException("the latent dataset is empty");
        var grid = new SegmentSchedule(scheduler.NumTrainTimesteps, options.SolverSteps, 1);
        var device = teacher.parameters().First().device;
        using var empty = conditioner.EmptyPromptIds.to(int64);
        using (var first = dataset.TokenIds(tensor(new long[] { 0 })))
            if (!empty.shape.SequenceEqual(first.shape))
                throw new ArgumentException($"the dataset's token ids are [{string.Join(", ", first.shape[1..])}] per caption, " +
                                            $"the model's [{string.Join(", ", empty.shape[1..])}]: " +
                                            "the dataset was prepared for another architecture or tokenizer");
        using var generator = new Generator((ulong)options.Seed, CPU);
        using var gridTimesteps = tensor(grid.Timesteps.Select(t => (long)t).ToArray());
        using var gridPrev = tensor(Enumerable.Range(0, grid.SolverSteps).Select(i => (long)grid.PrevTimestep(i)).ToArray());

        var parts = new List<Tensor[]>();
        using var _ = no_grad();
        for (int start = 0; start < options.Count; start += options.BatchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            int n = Math.Min(options.BatchSize, options.Count - start);
            // one fixed draw order per batch keeps a seed's output independent of everything else
            var rows = randint(0, dataset.Count, [n], int64, generator: generator);
            var gridIndex = randint(0, grid.SolverSteps, [n], int64, generator: generator);
            var w = rand([n], float32, generator: generator) * (options.GuidanceMax - options.GuidanceMin) + options.GuidanceMin;
            var drop = rand([n], float32, generator: generator) < options.EmptyPromptProbability;
            var latents = dataset.Latents.index_select(0, rows);
            var ids = dataset.TokenIds(rows);
            var noise = randn(latents.shape, latents.dtype, generator: generator);
            ids = where(drop.reshape([n, .. Enumerable.Repeat(1L, (int)ids.dim() - 1)]), empty.expand_as(ids), ids);

            var t = gridTimesteps.index_select(0, gridIndex);
            var tPrev = gridPrev.index_select(0, gridIndex);
            var xt = scheduler.AddNoise(latents, noise, t);
            var xPrev = GuidedDdimStep(teacher, conditioner, scheduler, xt.to(device), t.to(device), tPrev.to(device), w.to(device), ids);
            parts.Add(new[] { xt, t, gridIndex, w, ids, rows, xPrev.cpu(), tPrev }.Select(x => x.DetachFromDisposeScope()).ToArray());
            progress?.Invoke(start + n);
        }
        Tensor Cat(int i)
        {
            var joined = cat(parts.Select(p => p[i]).ToArray());
            foreach (var p in parts) p[i].Dispose();
            return joined;
        }
        return new TrajectoryShard(
            Cat(0), Cat(1), Cat(2), Cat(3), Cat(4), Cat(5), Cat(6), Cat(7), scheduler.NumTrainTimesteps, grid.SolverSteps);
    }

    /// <summary>One teacher DDIM step x_t → x_{t_prev} with LCM-form guidance w (per sample) against the conditioner's
    /// unconditional branch.</summary>
    public static Tensor GuidedDdimStep(UNet2DConditionModel teacher, PromptConditioner conditioner, DDPMScheduler scheduler,
        Tensor noisyLatents, Tensor timesteps, Tensor prevTimesteps, Tensor guidance, Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        var (x0, eps) = GuidedPrediction(teacher, conditioner.Unconditional(noisyLatents), conditioner.Condition(inputIds, noisyLatents),
            scheduler, noisyLatents, timesteps, guidance);
        return scheduler.DdimJump(x0, eps, prevTimesteps).MoveToOuterDisposeScope();
    }

    /// <summary>The teacher's guided x̂0 and ε̂ at x_t in the LCM form x̂0 = x0_c + w·(x0_c − x0_u) (ordinary CFG with scale
    /// w + 1), both branches in one UNet call. <paramref name="dtype"/>: the model output and x_t are cast to it before the
    /// conversion (DMD converts in float64); null keeps the model's.</summary>
    public static (Tensor PredOriginalSample, Tensor PredEpsilon) GuidedPrediction(UNet2DConditionModel teacher,
        PromptCondition unconditional, PromptCondition condition, DDPMScheduler scheduler, Tensor noisyLatents, Tensor timesteps,
        Tensor guidance, ScalarType? dtype = null)
    {
        using var scope = NewDisposeScope();
        long n = noisyLatents.shape[0];
        var both = PromptCondition.Cat(unconditional, condition);
        var output = both.Predict(teacher, cat([noisyLatents, noisyLatents]), cat([timesteps, timesteps]));
        var sample = cat([noisyLatents, noisyLatents]);
        if (dtype is { } type) (output, sample) = (output.to(type), sample.to(type));
        var (x0, eps) = scheduler.ConvertModelOutput(output, cat([timesteps, timesteps]), sample);
        var w = guidance.to(x0.dtype).reshape(-1, 1, 1, 1);
        var (x0u, x0c) = (x0.narrow(0, 0, n), x0.narrow(0, n, n));
        var (epsU, epsC) = (eps.narrow(0, 0, n), eps.narrow(0, n, n));
        return ((x0c + w * (x0c - x0u)).MoveToOuterDisposeScope(), (epsC + w * (epsC - epsU)).MoveToOuterDisposeScope());
    }
}
