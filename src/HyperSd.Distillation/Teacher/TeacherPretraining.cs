using System.Diagnostics;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Data;
using HyperSd.Distillation.Training;
using TorchSharp;
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
}

/// <summary>
/// Trains a UNet from scratch as an ε-prediction diffusion model on a latent dataset (the toy world's teacher; the
/// same loop fine-tunes at real scale). The text encoder is frozen; its embeddings are recomputed per batch.
/// </summary>
public static class TeacherPretraining
{
    public static IReadOnlyList<TrainingProgress> Train(UNet2DConditionModel unet, CLIPTextModel textEncoder, CLIPTokenizer tokenizer,
        LatentDataset data, DDPMScheduler schedule, TeacherPretrainingOptions options,
        Action<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        var device = unet.parameters().First().device;
        var generator = new Generator((ulong)options.Seed, device.type == DeviceType.CUDA ? CPU : device);
        var parameters = unet.parameters().Where(p => p.requires_grad).ToList();
        var optimizer = optim.AdamW(parameters, lr: options.LearningRate, weight_decay: options.WeightDecay);
        var ema = options.EmaDecay > 0 ? parameters.Select(p => p.detach().clone()).ToList() : null;
        using var emptyIds = tokenizer.Encode([""]).to(device);
        textEncoder.eval();
        unet.train();
        var history = new List<TrainingProgress>();
        var watch = Stopwatch.StartNew();
        double lossSum = 0;
        int lossCount = 0;
        for (int step = 1; step <= options.Steps; step++)
        {
            cancellation.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var indices = randint(0, data.Count, [options.BatchSize], generator: generator, dtype: int64);
            var latents = data.Latents.index_select(0, indices).to(device);
            var ids = data.InputIds.index_select(0, indices).to(device);
            var drop = rand([options.BatchSize], generator: generator) < options.CaptionDropout;
            ids = where(drop.to(device).unsqueeze(1), emptyIds.expand_as(ids), ids);
            Tensor context;
            using (no_grad()) context = textEncoder.call(ids).LastHiddenState;
            var noise = randn(latents.shape, generator: generator).to(device);
            var t = randint(0, schedule.NumTrainTimesteps, [options.BatchSize], generator: generator, dtype: int64).to(device);
            var noisy = schedule.AddNoise(latents, noise, t);
            var loss = nn.functional.mse_loss(unet.forward(noisy, t, context), noise);

            optimizer.zero_grad();
            loss.backward();
            nn.utils.clip_grad_norm_(parameters, options.GradClip);
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

            lossSum += loss.item<float>();
            lossCount++;
            if (step % options.ProgressEvery == 0 || step == options.Steps)
            {
                var report = new TrainingProgress("teacher", step, options.Steps,
                    new Dictionary<string, double> { ["mse"] = lossSum / lossCount, ["lr"] = lr }, step / watch.Elapsed.TotalSeconds);
                history.Add(report);
                progress?.Invoke(report);
                lossSum = 0; lossCount = 0;
            }
        }
        if (ema != null)
            using (no_grad())
                for (int i = 0; i < parameters.Count; i++)
                    parameters[i].copy_(ema[i]);
        foreach (var e in ema ?? []) e.Dispose();
        unet.eval();
        return history;
    }
}
