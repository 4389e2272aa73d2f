using System.Diagnostics;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Distillation.Data;
using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Distillation.FeedbackLearning;

/// <summary>One step's losses: the reward term mean(relu(α − r)), the anchor MSE, the weighted reward's batch mean and each
/// reward's (unweighted), and the step the student stopped at.</summary>
public sealed record ReflLosses(
    double Reward, double Anchor, double MeanReward, IReadOnlyDictionary<string, double> Rewards, int StopIndex);

public sealed record ReflProgress(int StudentSteps, int Step, int TotalSteps, ReflLosses Losses, double StepsPerSecond, int ResumedFrom);

/// <summary>A finished stage: the weighted reward's batch mean and the anchor loss over the first and last tenth of the steps,
/// the speed of the last (possibly resumed) run, and every step's losses.</summary>
public sealed record ReflMetrics(int StudentSteps, int Steps, double InitialReward, double FinalReward, double InitialAnchor,
    double FinalAnchor, double StepsPerSecond, IReadOnlyList<ReflLosses> History);

public sealed record ReflResult(SegmentStudent Student, ReflMetrics Metrics);

/// <summary>
/// Reward feedback learning on a k-step student (Hyper-SD §3.2; ImageReward's ReFL): from noise, the student samples its
/// trailing k-step schedule without gradients up to a random stop step (any, or the late ones: <see cref="ReflConfig.StopFrom"/>),
/// takes that step with gradients, and its x̂0 is decoded and scored; loss = scale · mean(relu(α − r)) with r the weighted
/// rewards, plus the anchor: the MSE between the student's x̂0 and the stage's starting student's from the same input, which
/// keeps the model from drifting off what it distilled.
/// Prompts are rows of the prepared dataset (its captions and token ids). Guidance is off, as the students sample. One seeded
/// generator (rows, noise, stop step), saved with the checkpoint: a resumed stage ends bit-identical to an uninterrupted one.
/// It writes what a TSCD stage writes (<see cref="SegmentStageLayout"/>), so the LoRA loads and merges the same way.
/// </summary>
public static class ReflTrainer
{
    /// <summary>Runs (or resumes, or returns the finished result of) one stage in <paramref name="dir"/>, training
    /// <paramref name="student"/>'s LoRA in place.</summary>
    public static ReflResult Train(ReflConfig config, UNet2DConditionModel unet, IAutoencoder vae, PromptConditioner conditioner,
        DDPMScheduler scheduler, LatentDataset prompts, WeightedReward reward, SegmentStudent student, string dir,
        Action<ReflProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        config.Validate();
        if (student.Lora is null)
            throw new ArgumentException("ReFL trains a LoRA student; this student is a full UNet copy (train TSCD with a lora)");
        using var run = new StageRun(config, unet, vae, conditioner, scheduler, prompts, reward, student, dir);
        return run.Execute(progress, cancellationToken);
    }

    /// <summary>The k-step trailing grid (diffusers' "trailing" spacing): 1 → [999]; 4 → [999, 749, 499, 249].</summary>
    public static long[] TrailingTimesteps(int numTrainTimesteps, int steps) =>
        Enumerable.Range(0, steps).Select(i => (long)Math.Round(numTrainTimesteps - i * (double)numTrainTimesteps / steps) - 1).ToArray();

    sealed class StageRun : IDisposable
    {
        readonly ReflConfig config;
        readonly UNet2DConditionModel unet;
        readonly IAutoencoder vae;
        readonly PromptConditioner conditioner;
        readonly DDPMScheduler scheduler;
        readonly LatentDataset prompts;
        readonly WeightedReward reward;
        readonly SegmentStudent student;
        readonly LoraAdapter anchor;
        readonly SegmentStageLayout layout;
        readonly Device device;
        readonly Generator generator;
        readonly List<Parameter> trainable;
        readonly OptimizerHelper optimizer;
        readonly List<ReflLosses> history = [];
        readonly long[] timesteps;
        readonly long[] latentShape;
        int step;

        public StageRun(ReflConfig config, UNet2DConditionModel unet, IAutoencoder vae, PromptConditioner conditioner,
            DDPMScheduler scheduler, LatentDataset prompts, WeightedReward reward, SegmentStudent student, string dir)
        {
            this.config = config; this.unet = unet; this.vae = vae; this.conditioner = conditioner; this.scheduler = scheduler;
            this.prompts = prompts; this.reward = reward; this.student = student;
            layout = new SegmentStageLayout(dir);
            device = unet.parameters().First().device;
            latentShape = prompts.Latents.shape[1..];
            if (latentShape.Length != 3 || latentShape[0] != unet.Config.InChannels)
                throw new ArgumentException($"the prompt dataset's latents are [{string.Join(", ", prompts.Latents.shape)}]; the UNet " +
                                            $"takes {unet.Config.InChannels} channels ([N, {unet.Config.InChannels}, h, w] expected)");
            generator = new Generator((ulong)config.Seed, CPU);
            timesteps = TrailingTimesteps(scheduler.NumTrainTimesteps, config.StudentSteps);
            anchor = FrozenCopy(student.Lora!, unet);
            trainable = student.Lora!.parameters().ToList();
            foreach (var p in trainable) p.requires_grad = true;
            optimizer = optim.AdamW(trainable, config.LearningRate, weight_decay: config.WeightDecay);
        }

        public ReflResult Execute(Action<ReflProgress>? progress, CancellationToken cancellationToken)
        {
            if (File.Exists(layout.FinalMetrics))
            {
                CheckpointFiles.LoadInto(student.Trainable, layout.FinalStudent);
                return new ReflResult(student, CheckpointFiles.ReadJson<ReflMetrics>(layout.FinalMetrics));
            }
            LoadCheckpoint();
            int first = step;
            var clock = Stopwatch.StartNew();
            while (step < config.Steps)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    if (step > first) SaveCheckpoint();
                    cancellationToken.ThrowIfCancellationRequested();
                }
                var losses = TrainStep();
                history.Add(losses);
                step++;
                progress?.Invoke(new ReflProgress(config.StudentSteps, step, config.Steps, losses,
                    (step - first) / clock.Elapsed.TotalSeconds, first));
                if (step % config.CheckpointEvery == 0 && step < config.Steps) SaveCheckpoint();
            }
            int window = Math.Max(1, history.Count / 10);
            var (head, tail) = (history.Take(window).ToList(), history.TakeLast(window).ToList());
            var metrics = new ReflMetrics(config.StudentSteps, history.Count, head.Average(h => h.MeanReward),
                tail.Average(h => h.MeanReward), head.Average(h => h.Anchor), tail.Average(h => h.Anchor),
                (step - first) / Math.Max(clock.Elapsed.TotalSeconds, 1e-9), history.ToList());
            SaveFinal(metrics);
            return new ReflResult(student, metrics);
        }

        ReflLosses TrainStep()
        {
            using var scope = NewDisposeScope();
            // one fixed draw order per step: rows, noise, stop step
            var rows = randint(0, prompts.Count, [config.BatchSize], int64, generator: generator);
            var x = randn([config.BatchSize, .. latentShape], float32, generator: generator).to(device);
            int stop = (int)randint(config.FirstStop, config.StudentSteps, [1], int64, generator: generator).item<long>();
            var captions = rows.data<long>().Select(i => prompts.Captions[(int)i]).ToList();
            var cond = conditioner.Condition(prompts.TokenIds(rows), x);

            using (no_grad())
                for (int i = 0; i < stop; i++)
                {
                    var (x0, eps) = scheduler.ConvertModelOutput(student.Predict(x, At(i), cond), At(i), x);
                    x = scheduler.DdimJump(x0, eps, At(i + 1));
                }
            var t = At(stop);
            var (predicted, _) = scheduler.ConvertModelOutput(student.Predict(x, t, cond), t, x);
            Tensor anchored;
            using (no_grad())
            {
                anchor.Attach(unet);
                try { anchored = scheduler.ConvertModelOutput(cond.Predict(unet, x, t), t, x).PredOriginalSample; }
                finally { anchor.Detach(); }
            }
            var images = vae.DecodeLatents(predicted).clamp(0, 1);
            var (r, means) = reward.Compute(captions, images);
            var rewardLoss = nn.functional.relu(config.Alpha - r).mean();
            var anchorLoss = (predicted - anchored).square().mean();
            var loss = rewardLoss * config.RewardScale + anchorLoss * config.AnchorWeight;
            if (!double.IsFinite(loss.item<float>()))
                throw new NotFiniteNumberException($"ReFL k = {config.StudentSteps}, step {step + 1}: the loss is not finite " +
                    $"(reward loss {rewardLoss.item<float>()}, anchor {anchorLoss.item<float>()}, rewards " +
                    $"{string.Join(", ", means.Select(m => $"{m.Key} {m.Value}"))})");
            optimizer.zero_grad();
            loss.backward();
            nn.utils.clip_grad_norm_(trainable, config.MaxGradNorm);
            optimizer.step();
            return new ReflLosses(rewardLoss.item<float>(), anchorLoss.item<float>(), r.mean().item<float>(), means, stop);
        }

        /// <summary>Timestep i of the student's grid (−1, the data, past its end), as a batch.</summary>
        Tensor At(int i) => full([config.BatchSize], i < timesteps.Length ? timesteps[i] : -1, int64, device);

        /// <summary>The starting student's LoRA, frozen: the anchor's model.</summary>
        static LoraAdapter FrozenCopy(LoraAdapter lora, UNet2DConditionModel unet)
        {
            var device = unet.parameters().First().device;
            var copy = LoraAdapter.Create(unet, new LoraConfig(lora.Rank, lora.Alpha, lora.Layers.Keys.ToList()), device);
            using (no_grad())
            {
                var source = lora.state_dict();
                foreach (var (key, value) in copy.state_dict()) value.copy_(source[key]);
            }
            foreach (var p in copy.parameters()) p.requires_grad = false;
            return copy;
        }

        const string StudentFile = "student.safetensors", AnchorFile = "anchor.safetensors", OptimizerFile = "optimizer.bin",
            StateFile = "state.json", RngKey = "state";

        sealed record CheckpointState(int StudentSteps, int Step, long Seed, List<ReflLosses> History);

        Dictionary<string, Generator> Generators => new() { [RngKey] = generator };

        void SaveCheckpoint() => CheckpointFiles.Save(layout.Checkpoint, tmp =>
        {
            SafeTensors.Save(Path.Combine(tmp, StudentFile), StateDict.Of(student.Trainable));
            SafeTensors.Save(Path.Combine(tmp, AnchorFile), StateDict.Of(anchor));
            optimizer.save_state_dict(Path.Combine(tmp, OptimizerFile));
            CheckpointFiles.SaveGenerators(tmp, Generators);
            CheckpointFiles.WriteJson(Path.Combine(tmp, StateFile), new CheckpointState(config.StudentSteps, step, config.Seed, history));
        });

        void LoadCheckpoint()
        {
            if (CheckpointFiles.Find(layout.Checkpoint) is not { } path) return;
            var state = CheckpointFiles.ReadJson<CheckpointState>(Path.Combine(path, StateFile));
            if (state.StudentSteps != config.StudentSteps || state.Seed != config.Seed)
                throw new InvalidDataException($"{path}: the checkpoint is of a ReFL stage with k = {state.StudentSteps}, seed " +
                                               $"{state.Seed}; this stage has k = {config.StudentSteps}, seed {config.Seed}");
            CheckpointFiles.LoadInto(student.Trainable, Path.Combine(path, StudentFile));
            // the anchor is the stage's start, not the student it resumes from
            CheckpointFiles.LoadInto(anchor, Path.Combine(path, AnchorFile));
            optimizer.load_state_dict(Path.Combine(path, OptimizerFile));
            CheckpointFiles.LoadGenerators(path, Generators);
            step = state.Step;
            history.Clear();
            history.AddRange(state.History);
        }

        void SaveFinal(ReflMetrics metrics) => layout.SaveFinal(student, config.LoraFormat, "refl", config.StudentSteps, metrics);

        public void Dispose()
        {
            generator.Dispose();
            optimizer.Dispose();
            anchor.Dispose();
        }
    }
}
