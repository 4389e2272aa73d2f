using System.Diagnostics;
using System.Text.Json;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Data;
using HyperSd.Distillation.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Teacher;

public sealed record TeacherPretrainingOptions
{
    public int Steps { get; init; } = 4000;
    public int BatchSize { get; init; } = 64;
    public double LearningRate { get; init; } = 1e-3;
    public int WarmupSteps { get; init; } = 200;
    public double WeightDecay { get; init; } = 0.01;
    /// <summary>Share of captions replaced by the empty prompt, so the teacher also learns the unconditional score (CFG).</summary>
    public double CaptionDropout { get; init; } = 0.1;
    public double GradClip { get; init; } = 1.0;
    /// <summary>EMA of the weights, copied into the model at the end (0 disables it).</summary>
    public double EmaDecay { get; init; } = 0.999;
    public long Seed { get; init; }
    public int ProgressEvery { get; init; } = 50;
    /// <summary>Train the text encoder with the UNet (same optimiser and EMA) instead of keeping it frozen.</summary>
    public bool TrainTextEncoder { get; init; }
    /// <summary>Where to keep a checkpoint (weights, EMA, optimiser and generator state) every
    /// <see cref="CheckpointEvery"/> steps; a run given a folder with a checkpoint in it resumes from there exactly.</summary>
    public string? CheckpointDir { get; init; }
    public int CheckpointEvery { get; init; } = 250;
}

/// <summary>
/// Trains a UNet from scratch as an ε-prediction diffusion model on a latent dataset (the toy world's teacher; the
/// same loop fine-tunes at real scale). The text encoder is frozen (its embeddings recomputed per batch), or trained
/// with the UNet when <see cref="TeacherPretrainingOptions.TrainTextEncoder"/>.
/// </summary>
public static class TeacherPretraining
{
    public static IReadOnlyList<TrainingProgress> Train(UNet2DConditionModel unet, CLIPTextModel textEncoder, CLIPTokenizer tokenizer,
        LatentDataset data, DDPMScheduler schedule, TeacherPretrainingOptions options,
        Action<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        var device = unet.parameters().First().device;
        var generator = new Generator((ulong)options.Seed, device.type == DeviceType.CUDA ? CPU : device);
        var parameters = unet.parameters().Concat(options.TrainTextEncoder ? textEncoder.parameters() : [])
            .Where(p => p.requires_grad).ToList();
        var optimizer = optim.AdamW(parameters, lr: options.LearningRate, weight_decay: options.WeightDecay);
        var ema = options.EmaDecay > 0 ? parameters.Select(p => p.detach().clone()).ToList() : null;
        using var emptyIds = tokenizer.Encode([""]).to(device);
        if (options.TrainTextEncoder) textEncoder.train();
        else textEncoder.eval();
        unet.train();
        var history = new List<TrainingProgress>();
        var watch = Stopwatch.StartNew();
        double lossSum = 0;
        int lossCount = 0, skipped = 0, consecutiveSkipped = 0;
        string? lastSkipped = null;
        var checkpoint = options.CheckpointDir is null ? null
            : new Checkpoint(options.CheckpointDir, unet, textEncoder, ema, optimizer, generator, options);
        int first = 1 + (checkpoint?.Load(history) ?? 0);
        for (int step = first; step <= options.Steps; step++)
        {
            cancellation.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var indices = randint(0, data.Count, [options.BatchSize], generator: generator, dtype: int64);
            var latents = data.Latents.index_select(0, indices).to(device);
            var ids = data.InputIds.index_select(0, indices).to(device);
            var drop = rand([options.BatchSize], generator: generator) < options.CaptionDropout;
            ids = where(drop.to(device).unsqueeze(1), emptyIds.expand_as(ids), ids);
            Tensor context;
            if (options.TrainTextEncoder) context = textEncoder.call(ids).LastHiddenState;
            else using (no_grad()) context = textEncoder.call(ids).LastHiddenState;
            var noise = randn(latents.shape, generator: generator).to(device);
            var t = randint(0, schedule.NumTrainTimesteps, [options.BatchSize], generator: generator, dtype: int64).to(device);
            var noisy = schedule.AddNoise(latents, noise, t);
            var prediction = unet.forward(noisy, t, context);
            var loss = nn.functional.mse_loss(prediction, noise);
            float lossValue = loss.item<float>();
            if (!float.IsFinite(lossValue))
            {
                // Seen intermittently on a loaded CPU (not reproducible with the same seed): the step is skipped, so one bad
                // forward pass does not poison the weights; a run that keeps failing stops.
                string Finite(Tensor x) => x.isfinite().all().item<bool>() ? "finite" : "NOT finite";
                lastSkipped = $"step {step}: loss {lossValue}; latents {Finite(latents)}, context {Finite(context)}, " +
                              $"UNet output {Finite(prediction)}, " +
                              $"weights {(parameters.All(p => p.isfinite().all().item<bool>()) ? "finite" : "NOT finite")}";
                skipped++;
                if (++consecutiveSkipped >= 5) throw new InvalidOperationException($"teacher pretraining diverged: {lastSkipped}");
                continue;
            }
            consecutiveSkipped = 0;

            optimizer.zero_grad();
            loss.backward();
            double gradNorm = nn.utils.clip_grad_norm_(parameters, options.GradClip);
            if (!double.IsFinite(gradNorm))
            {
                // A finite loss with non-finite gradients, seen intermittently on a loaded CPU (not reproducible with the same
                // seed): one such update would turn every weight into NaN, so the step is skipped.
                lastSkipped = $"step {step}: gradient norm {gradNorm} at loss {lossValue}";
                skipped++;
                if (++consecutiveSkipped >= 5) throw new InvalidOperationException($"teacher pretraining diverged: {lastSkipped}");
                continue;
            }
            double lr = options.LearningRate * Math.Min(1.0, step / (double)Math.Max(1, options.WarmupSteps))
                        * (0.55 + 0.45 * Math.Cos(Math.PI * step / options.Steps)); // warm-up, then cosine to 10%
            foreach (var group in optimizer.ParamGroups) group.LearningRate = lr;
            optimizer.step();
            if (ema != null)
            {
                // diffusers' EMAModel warm-up: a short run must not keep much of the random initialisation.
                double decay = Math.Min(options.EmaDecay, (1.0 + step) / (10.0 + step));
                using (no_grad())
                    for (int i = 0; i < parameters.Count; i++)
                        ema[i].lerp_(parameters[i], 1 - decay);
            }

            lossSum += lossValue;
            lossCount++;
            if (step % options.ProgressEvery == 0 || step == options.Steps)
            {
                var report = new TrainingProgress("teacher", step, options.Steps,
                    new Dictionary<string, double> { ["mse"] = lossSum / lossCount, ["lr"] = lr, ["skipped"] = skipped },
                    (step - first + 1) / watch.Elapsed.TotalSeconds);
                history.Add(report);
                progress?.Invoke(report);
                lossSum = 0; lossCount = 0;
            }
            if (checkpoint is not null && step % options.CheckpointEvery == 0 && step < options.Steps) checkpoint.Save(step, history);
        }
        if (ema != null)
            using (no_grad())
                for (int i = 0; i < parameters.Count; i++)
                    parameters[i].copy_(ema[i]);
        foreach (var e in ema ?? []) e.Dispose();
        unet.eval();
        textEncoder.eval();
        return history;
    }

    /// <summary>A training state in a folder, written beside the last one and swapped in, so a crash leaves one whole.</summary>
    /// <summary>Loads a run's checkpoint into <paramref name="unet"/> and <paramref name="textEncoder"/> as the run would
    /// end there: the EMA weights where the run keeps an EMA. Returns the step it was taken after.</summary>
    public static int LoadCheckpointWeights(string dir, UNet2DConditionModel unet, CLIPTextModel textEncoder)
    {
        var state = JsonSerializer.Deserialize<Checkpoint.State>(File.ReadAllText(Path.Combine(dir, Checkpoint.StateFile)))
                    ?? throw new InvalidDataException($"{dir}/{Checkpoint.StateFile}: empty");
        Checkpoint.LoadInto(unet, Path.Combine(dir, Checkpoint.UnetFile));
        Checkpoint.LoadInto(textEncoder, Path.Combine(dir, Checkpoint.TextEncoderFile));
        var emaPath = Path.Combine(dir, Checkpoint.EmaFile);
        if (File.Exists(emaPath))
        {
            var parameters = unet.parameters().Concat(state.TrainTextEncoder ? textEncoder.parameters() : [])
                .Where(p => p.requires_grad).ToList();
            var saved = SafeTensors.Load(emaPath);
            using (no_grad())
                for (int i = 0; i < parameters.Count; i++)
                    parameters[i].copy_(saved.TryGetValue($"{i}", out var e) ? e
                        : throw new InvalidDataException($"{emaPath}: missing EMA tensor {i}"));
            foreach (var e in saved.Values) e.Dispose();
        }
        unet.eval();
        textEncoder.eval();
        return state.Step;
    }

    sealed class Checkpoint(string dir, nn.Module unet, nn.Module textEncoder, List<Tensor>? ema, OptimizerHelper optimizer,
        Generator generator, TeacherPretrainingOptions options)
    {
        internal const string UnetFile = "unet.safetensors", TextEncoderFile = "text_encoder.safetensors", EmaFile = "ema.safetensors",
            OptimizerFile = "optimizer.bin", RngFile = "rng.safetensors", StateFile = "state.json";

        /// <summary>What must match for a resume to continue the same run.</summary>
        internal sealed record State(int Step, long Seed, int Steps, int BatchSize, double LearningRate, bool TrainTextEncoder,
            List<TrainingProgress> History);

        public void Save(int step, List<TrainingProgress> history)
        {
            var tmp = dir.TrimEnd('/') + ".tmp";
            var old = dir.TrimEnd('/') + ".old";
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
            Directory.CreateDirectory(tmp);
            SafeTensors.Save(Path.Combine(tmp, UnetFile), StateDict.Of(unet));
            SafeTensors.Save(Path.Combine(tmp, TextEncoderFile), StateDict.Of(textEncoder));
            if (ema is not null)
                SafeTensors.Save(Path.Combine(tmp, EmaFile), ema.Select((e, i) => (e, i)).ToDictionary(x => $"{x.i}", x => x.e));
            optimizer.save_state_dict(Path.Combine(tmp, OptimizerFile));
            using (var rng = generator.get_state())
                SafeTensors.Save(Path.Combine(tmp, RngFile), new Dictionary<string, Tensor> { ["state"] = rng });
            File.WriteAllText(Path.Combine(tmp, StateFile), JsonSerializer.Serialize(new State(step, options.Seed, options.Steps,
                options.BatchSize, options.LearningRate, options.TrainTextEncoder, history)));
            if (Directory.Exists(old)) Directory.Delete(old, true);
            if (Directory.Exists(dir)) Directory.Move(dir, old);
            Directory.Move(tmp, dir);
            if (Directory.Exists(old)) Directory.Delete(old, true);
        }

        /// <summary>Restores the checkpoint if there is one; returns the step it was taken after (0: none).</summary>
        public int Load(List<TrainingProgress> history)
        {
            var path = !Directory.Exists(dir) && Directory.Exists(dir.TrimEnd('/') + ".old") ? dir.TrimEnd('/') + ".old" : dir;
            if (!File.Exists(Path.Combine(path, StateFile))) return 0;
            var state = JsonSerializer.Deserialize<State>(File.ReadAllText(Path.Combine(path, StateFile)))
                        ?? throw new InvalidDataException($"{path}/{StateFile}: empty");
            var expected = new State(state.Step, options.Seed, options.Steps, options.BatchSize, options.LearningRate,
                options.TrainTextEncoder, state.History);
            if (state != expected)
                throw new InvalidDataException($"{path}: a checkpoint of another run (seed {state.Seed}, {state.Steps} steps, " +
                                               $"batch {state.BatchSize}, " +
                                               $"lr {state.LearningRate}, text encoder trained: {state.TrainTextEncoder}); " +
                                               "remove it or use the same options");
            LoadInto(unet, Path.Combine(path, UnetFile));
            LoadInto(textEncoder, Path.Combine(path, TextEncoderFile));
            if (ema is not null)
            {
                var saved = SafeTensors.Load(Path.Combine(path, EmaFile));
                using (no_grad())
                    for (int i = 0; i < ema.Count; i++)
                        ema[i].copy_(saved.TryGetValue($"{i}", out var s) ? s
                            : throw new InvalidDataException($"{path}/{EmaFile}: missing EMA tensor {i}"));
                foreach (var s in saved.Values) s.Dispose();
            }
            optimizer.load_state_dict(Path.Combine(path, OptimizerFile));
            var rng = SafeTensors.Load(Path.Combine(path, RngFile));
            generator.set_state(rng.TryGetValue("state", out var g) ? g
                : throw new InvalidDataException($"{path}/{RngFile}: missing generator state"));
            foreach (var t in rng.Values) t.Dispose();
            history.AddRange(state.History);
            return state.Step;
        }

        internal static void LoadInto(nn.Module module, string path)
        {
            var tensors = SafeTensors.Load(path);
            StateDict.Load(module, tensors, new WeightSource(path));
            foreach (var t in tensors.Values) t.Dispose();
        }
    }
}
