using System.Globalization;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Distillation.Data;
using HyperSd.Distillation.FeedbackLearning;
using HyperSd.Distillation.Trajectories;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.DistributionMatching;

/// <summary>
/// DMD's regression set: seeded noise and the teacher's ODE solution from it (DDIM on the trailing grid with classifier-free
/// guidance) for captions of the prompt dataset, with the captions' token ids. The one-step generator regresses onto them.
/// Made once per stage and stored beside it, so a resumed stage does not pay for it again.
/// </summary>
public sealed class TeacherOdePairs : IDisposable
{
    /// <summary>x_T [P, C, H, W] (CPU).</summary>
    public Tensor Noise { get; }
    /// <summary>The teacher's sample from each noise [P, C, H, W] (CPU).</summary>
    public Tensor Samples { get; }
    /// <summary>The token ids of each pair's caption, rows of the dataset's ids (CPU).</summary>
    public Tensor InputIds { get; }
    public int Count => (int)Noise.shape[0];

    TeacherOdePairs(Tensor noise, Tensor samples, Tensor inputIds) { Noise = noise; Samples = samples; InputIds = inputIds; }

    /// <summary>What a stored set was made with: a stage that asks for other pairs refuses it.</summary>
    public sealed record Settings(int Count, int TeacherSteps, double Guidance, long Seed)
    {
        public Dictionary<string, string> ToMetadata() => new()
        {
            ["count"] = Count.ToString(CultureInfo.InvariantCulture),
            ["teacher_steps"] = TeacherSteps.ToString(CultureInfo.InvariantCulture),
            ["guidance"] = Guidance.ToString("R", CultureInfo.InvariantCulture),
            ["seed"] = Seed.ToString(CultureInfo.InvariantCulture),
        };
    }

    /// <summary>Generates <see cref="Settings.Count"/> pairs: dataset rows, then noise, from one generator seeded with
    /// <see cref="Settings.Seed"/>; then, a batch at a time, the teacher's guided DDIM steps down the trailing grid (the last
    /// to the data, as the DDIM sampler ends).</summary>
    public static TeacherOdePairs Generate(UNet2DConditionModel teacher, PromptConditioner conditioner, DDPMScheduler scheduler,
        LatentDataset prompts, Settings settings, int batchSize, CancellationToken cancellationToken = default)
    {
        if (settings.Count < 1) throw new ArgumentException($"regression pairs: count must be at least 1, got {settings.Count}");
        var device = teacher.parameters().First().device;
        var grid = ReflTrainer.TrailingTimesteps(scheduler.NumTrainTimesteps, settings.TeacherSteps);
        using var generator = new Generator((ulong)settings.Seed, CPU);
        var latentShape = prompts.Latents.shape[1..];
        // all draws first: the pairs do not depend on the batch size
        using var allRows = randint(0, prompts.Count, [settings.Count], int64, generator: generator);
        using var allNoise = randn([settings.Count, .. latentShape], float32, generator: generator);
        var parts = new List<(Tensor Noise, Tensor Sample, Tensor Ids)>();
        using var _ = no_grad();
        for (int start = 0; start < settings.Count; start += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            int n = Math.Min(batchSize, settings.Count - start);
            var noise = allNoise.narrow(0, start, n).clone();
            var ids = prompts.TokenIds(allRows.narrow(0, start, n));
            // TrajectorySampling's guidance is LCM's w = CFG scale − 1
            var w = full([n], settings.Guidance - 1, float32, device);
            var x = noise.to(device);
            for (int i = 0; i < grid.Length; i++)
            {
                var t = full([n], grid[i], int64, device);
                var prev = full([n], i + 1 < grid.Length ? grid[i + 1] : -1, int64, device);
                x = TrajectorySampling.GuidedDdimStep(teacher, conditioner, scheduler, x, t, prev, w, ids);
            }
            parts.Add((noise.DetachFromDisposeScope(), x.cpu().DetachFromDisposeScope(), ids.DetachFromDisposeScope()));
        }
        var pairs = new TeacherOdePairs(cat(parts.Select(p => p.Noise).ToArray()), cat(parts.Select(p => p.Sample).ToArray()),
            cat(parts.Select(p => p.Ids).ToArray()));
        foreach (var (a, b, c) in parts) { a.Dispose(); b.Dispose(); c.Dispose(); }
        return pairs;
    }

    const string NoiseKey = "noise", SamplesKey = "samples", IdsKey = "input_ids";

    public void Save(string path, Settings settings) => SafeTensors.Save(path,
        new Dictionary<string, Tensor> { [NoiseKey] = Noise, [SamplesKey] = Samples, [IdsKey] = InputIds }, settings.ToMetadata());

    /// <summary>The stored pairs at <paramref name="path"/> when it exists (refused if made with other settings), else new
    /// ones, saved there.</summary>
    public static TeacherOdePairs LoadOrGenerate(string path, UNet2DConditionModel teacher, PromptConditioner conditioner,
        DDPMScheduler scheduler, LatentDataset prompts, Settings settings, int batchSize, CancellationToken cancellationToken = default)
    {
        if (!File.Exists(path))
        {
            var made = Generate(teacher, conditioner, scheduler, prompts, settings, batchSize, cancellationToken);
            made.Save(path, settings);
            return made;
        }
        var stored = SafeTensors.ReadMetadata(path);
        var expected = settings.ToMetadata();
        var differs = expected.Where(kv => !stored.TryGetValue(kv.Key, out var v) || v != kv.Value).ToList();
        if (differs.Count > 0)
        {
            var made = string.Join(", ", differs.Select(kv => $"{kv.Key} {stored.GetValueOrDefault(kv.Key, "(none)")}"));
            var asked = string.Join(", ", differs.Select(kv => $"{kv.Key} {kv.Value}"));
            throw new InvalidDataException($"{path}: the regression pairs were made with {made}; this stage asks for {asked} " +
                                           "(delete the file to remake them)");
        }
        var tensors = SafeTensors.Load(path);
        Tensor Take(string key) => tensors.TryGetValue(key, out var t) ? t
            : throw new InvalidDataException($"{path}: missing tensor '{key}'");
        return new TeacherOdePairs(Take(NoiseKey), Take(SamplesKey), Take(IdsKey));
    }

    public void Dispose()
    {
        Noise.Dispose();
        Samples.Dispose();
        InputIds.Dispose();
    }
}
