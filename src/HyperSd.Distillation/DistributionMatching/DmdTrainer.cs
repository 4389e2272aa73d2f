using System.Diagnostics;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Distillation.Data;
using HyperSd.Distillation.FeedbackLearning;
using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Training;
using HyperSd.Distillation.Trajectories;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Distillation.DistributionMatching;

/// <summary>One iteration's losses. The generator's (distribution matching, regression, GAN, reward) are null on iterations
/// where it does not update, or while their weight is 0; the fake score's ε-MSE is there on every iteration.</summary>
public sealed record DmdLosses(bool GeneratorUpdated, double FakeScore, double? DistributionMatching, double? Regression,
    double? GanGenerator, double? GanDiscriminator, double? Reward, double? MeanReward, IReadOnlyDictionary<string, double>? Rewards);

/// <summary>Reported after every iteration; <paramref name="ResumedFrom"/> is the iteration this run started at (0 when fresh).</summary>
public sealed record DmdProgress(int Step, int TotalSteps, DmdLosses Losses, double StepsPerSecond, int ResumedFrom);

/// <summary>A finished stage: the distribution-matching and regression losses over the first and last tenth of the generator's
/// updates, the fake score's over the first and last tenth of the iterations, the speed of the last (possibly resumed) run,
/// and every iteration's losses.</summary>
public sealed record DmdMetrics(int Steps, int GeneratorUpdates, double? InitialDistributionMatching, double? FinalDistributionMatching,
    double? InitialRegression, double? FinalRegression, double InitialFakeScore, double FinalFakeScore, double StepsPerSecond,
    IReadOnlyList<DmdLosses> History);

public sealed record DmdResult(SegmentStudent Student, DmdMetrics Metrics);

/// <summary>
/// One-step enhancement with score distillation (Hyper-SD §3.3, in DMD2's form) on the 1-step student (the generator): from
/// noise at the trailing grid's single timestep it predicts x = x̂0 (guidance off; prompts are rows of the dataset). The
/// distribution-matching gradient noises x to t ∈ [2 %, 98 %] of the training timesteps and compares the real score (the
/// frozen teacher with CFG) with the fake score (a second LoRA on the same base UNet, trained by ε-MSE on the generator's
/// detached outputs to follow their distribution); the generator also regresses onto stored teacher ODE pairs and, optionally,
/// takes the feedback rewards and a GAN term from a head on the fake score's mid-block features. Two time scales: the fake score
/// steps every iteration, the generator every n-th. Seeded generators saved with the checkpoint: a resumed stage ends
/// bit-identical to an uninterrupted one. It writes what a TSCD stage writes (<see cref="SegmentStageLayout"/>, method "dmd"),
/// so the generator's LoRA loads and merges the same way, plus the fake score's LoRA.
/// </summary>
public static class DmdTrainer
{
    /// <summary>File names in the stage folder: the fake score's LoRA weights in <c>final/</c>, the regression pairs beside it.</summary>
    public const string FakeScoreFile = "fake_score.safetensors", RegressionPairsFile = "regression_pairs.safetensors";

    /// <summary>Runs (or resumes, or returns the finished result of) one stage in <paramref name="dir"/>, training
    /// <paramref name="generator"/>'s LoRA in place.</summary>
    /// <param name="rewards">The feedback rewards; needed when <see cref="DmdConfig.RewardWeight"/> is positive.</param>
    public static DmdResult Train(DmdConfig config, UNet2DConditionModel unet, IAutoencoder vae, PromptConditioner conditioner,
        DDPMScheduler scheduler, LatentDataset prompts, WeightedReward? rewards, SegmentStudent generator, string dir,
        Action<DmdProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        config.Validate();
        if (generator.Lora is null)
            throw new ArgumentException("DMD trains a LoRA generator; this student is a full UNet copy (train TSCD with a lora)");
        if (config.RewardWeight > 0 && rewards is null)
            throw new ArgumentException($"DMD config: 'reward_weight' is {config.RewardWeight} but no rewards were given: pass the " +
                                        "weighted rewards, or set reward_weight to 0");
        if (!ReferenceEquals(generator.Teacher, unet))
            throw new ArgumentException("the generator's LoRA must sit on the same base UNet as the teacher and fake score");
        using var run = new StageRun(config, unet, vae, conditioner, scheduler, prompts, rewards, generator, dir);
        return run.Execute(progress, cancellationToken);
    }

    sealed class StageRun : IDisposable
    {
        readonly DmdConfig config;
        readonly UNet2DConditionModel unet;
        readonly IAutoencoder vae;
        readonly PromptConditioner conditioner;
        readonly DDPMScheduler scheduler;
        readonly LatentDataset prompts;
        readonly WeightedReward? rewards;
        readonly SegmentStudent student;
        // The fake score is a second LoRA on the same base UNet. LoraAdapter adds its output through forward hooks and
        // SegmentStudent attaches its LoRA only while it predicts, so at any time at most one of the two is attached and
        // the bare UNet (neither attached) is the teacher: no weights are swapped.
        readonly SegmentStudent fakeScore;
        readonly DiscriminatorHead? head;
        readonly string dir;
        readonly SegmentStageLayout layout;
        readonly Device device;
        readonly Generator generator, regressionGenerator, adversarialGenerator;
        readonly List<Parameter> generatorParameters, fakeScoreParameters;
        readonly OptimizerHelper generatorOptimizer, fakeScoreOptimizer;
        readonly List<DmdLosses> history = [];
        readonly long[] latentShape;
        readonly long generatorTimestep, minTimestep, maxTimestep;
        TeacherOdePairs? pairs;
        int step;

        public StageRun(DmdConfig config, UNet2DConditionModel unet, IAutoencoder vae, PromptConditioner conditioner,
            DDPMScheduler scheduler, LatentDataset prompts, WeightedReward? rewards, SegmentStudent student, string dir)
        {
            this.config = config; this.unet = unet; this.vae = vae; this.conditioner = conditioner; this.scheduler = scheduler;
            this.prompts = prompts; this.rewards = rewards; this.student = student; this.dir = dir;
            layout = new SegmentStageLayout(dir);
            device = unet.parameters().First().device;
            latentShape = prompts.Latents.shape[1..];
            if (latentShape.Length != 3 || latentShape[0] != unet.Config.InChannels)
                throw new ArgumentException($"the prompt dataset's latents are [{string.Join(", ", prompts.Latents.shape)}]; the UNet " +
                                            $"takes {unet.Config.InChannels} channels ([N, {unet.Config.InChannels}, h, w] expected)");
            int T = scheduler.NumTrainTimesteps;
            generatorTimestep = ReflTrainer.TrailingTimesteps(T, 1)[0];
            // DMD2: randint(min_step, min(max_step + 1, T)) with the steps ⌊fraction·T⌋
            minTimestep = (long)Math.Floor(config.MinTimestepFraction * T);
            maxTimestep = Math.Min((long)Math.Floor(config.MaxTimestepFraction * T), T - 1);
            generator = new Generator((ulong)config.Seed, CPU);
            regressionGenerator = new Generator((ulong)config.Seed + RegressionSeedOffset, CPU);
            adversarialGenerator = new Generator((ulong)config.Seed + AdversarialSeedOffset, CPU);
            using (var init = new Generator((ulong)config.Seed + FakeScoreSeedOffset, CPU))
                fakeScore = SegmentStudent.WithLora(unet, new LoraConfig(config.FakeScoreRank, config.FakeScoreAlpha), init);
            if (config.GanGeneratorWeight > 0)
            {
                if (unet.Config.MidBlockType is null)
                    throw new ArgumentException("DMD's GAN head reads the UNet's mid block, and this UNet has none " +
                                                "(set gan_generator_weight to 0)");
                long channels = unet.Config.BlockOutChannels[^1];
                head = new DiscriminatorHead(channels, channels, device);
                head.Reset(adversarialGenerator);
            }
            generatorParameters = student.Lora!.parameters().ToList();
            fakeScoreParameters = [.. fakeScore.Lora!.parameters(), .. head?.parameters() ?? []];
            foreach (var p in generatorParameters.Concat(fakeScoreParameters)) p.requires_grad = true;
            generatorOptimizer = optim.AdamW(generatorParameters, config.GeneratorLearningRate, 0.9, 0.999,
                weight_decay: config.WeightDecay);
            fakeScoreOptimizer = optim.AdamW(fakeScoreParameters, config.FakeScoreLearningRate, 0.9, 0.999,
                weight_decay: config.WeightDecay);
        }

        public DmdResult Execute(Action<DmdProgress>? progress, CancellationToken cancellationToken)
        {
            if (File.Exists(layout.FinalMetrics))
            {
                CheckpointFiles.LoadInto(student.Trainable, layout.FinalStudent);
                return new DmdResult(student, CheckpointFiles.ReadJson<DmdMetrics>(layout.FinalMetrics));
            }
            if (config.RegressionWeight > 0)
            {
                Directory.CreateDirectory(dir);
                pairs = TeacherOdePairs.LoadOrGenerate(Path.Combine(dir, RegressionPairsFile), unet, conditioner, scheduler, prompts,
                    new TeacherOdePairs.Settings(config.RegressionPairs, config.RegressionTeacherSteps, config.TeacherGuidance,
                        config.Seed + (long)PairsSeedOffset), config.BatchSize, cancellationToken);
                if (!pairs.Noise.shape[1..].SequenceEqual(latentShape))
                    throw new InvalidDataException($"{Path.Combine(dir, RegressionPairsFile)}: the pairs' latents are " +
                        $"[{string.Join(", ", pairs.Noise.shape[1..])}], the dataset's [{string.Join(", ", latentShape)}]");
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
                progress?.Invoke(new DmdProgress(step, config.Steps, losses, (step - first) / clock.Elapsed.TotalSeconds, first));
                if (step % config.CheckpointEvery == 0 && step < config.Steps) SaveCheckpoint();
            }
            var metrics = Metrics((step - first) / Math.Max(clock.Elapsed.TotalSeconds, 1e-9));
            SaveFinal(metrics);
            return new DmdResult(student, metrics);
        }

        DmdLosses TrainStep()
        {
            using var scope = NewDisposeScope();
            bool generatorTurn = step % config.GeneratorUpdateEvery == 0;
            // one fixed draw order per iteration: rows, noise, [DM timestep and noise], fake-score timestep and noise
            var rows = randint(0, prompts.Count, [config.BatchSize], int64, generator: generator);
            var z = randn([config.BatchSize, .. latentShape], float32, generator: generator).to(device);
            var cond = conditioner.Condition(prompts.TokenIds(rows), z);

            Tensor x;
            double? dm = null, regression = null, ganGenerator = null, reward = null, meanReward = null;
            IReadOnlyDictionary<string, double>? rewardMeans = null;
            if (generatorTurn)
            {
                x = Generate(z, cond);
                var loss = tensor(0f, device: device);
                if (config.DistributionMatchingWeight > 0)
                {
                    var t = randint(minTimestep, maxTimestep + 1, [config.BatchSize], int64, generator: generator).to(device);
                    var noise = randn(x.shape, float32, generator: generator).to(device);
                    var term = DistributionMatchingLoss.Loss(x, DistributionMatchingGradient(x, t, noise, cond));
                    loss = loss + term * config.DistributionMatchingWeight;
                    dm = term.item<float>();
                }
                if (config.RegressionWeight > 0)
                {
                    var i = randint(0, pairs!.Count, [config.BatchSize], int64, generator: regressionGenerator);
                    var noise = pairs.Noise.index_select(0, i).to(device);
                    var predicted = Generate(noise, conditioner.Condition(pairs.InputIds.index_select(0, i), noise));
                    var term = nn.functional.mse_loss(predicted, pairs.Samples.index_select(0, i).to(device));
                    loss = loss + term * config.RegressionWeight;
                    regression = term.item<float>();
                }
                if (head is not null)
                {
                    // the features stay in the iteration's scope: backward still needs them
                    var term = nn.functional.softplus(-Realism(x, cond, adversarialGenerator)).mean();
                    loss = loss + term * config.GanGeneratorWeight;
                    ganGenerator = term.item<float>();
                }
                if (config.RewardWeight > 0)
                {
                    var captions = rows.data<long>().Select(r => prompts.Captions[(int)r]).ToList();
                    var (r, means) = rewards!.Compute(captions, vae.DecodeLatents(x).clamp(0, 1));
                    var term = nn.functional.relu(config.RewardAlpha - r).mean();
                    loss = loss + term * config.RewardWeight;
                    (reward, meanReward, rewardMeans) = (term.item<float>(), r.mean().item<float>(), means);
                }
                if (!double.IsFinite(loss.item<float>()))
                    throw new NotFiniteNumberException($"DMD step {step + 1}: the generator loss is not finite (distribution " +
                        $"matching {dm}, regression {regression}, GAN {ganGenerator}, reward {reward})");
                generatorOptimizer.zero_grad();
                loss.backward();
                nn.utils.clip_grad_norm_(generatorParameters, config.MaxGradNorm);
                SetLearningRate(generatorOptimizer, config.GeneratorLearningRate);
                generatorOptimizer.step();
            }
            else
            {
                using (no_grad()) x = Generate(z, cond);
            }

            // the fake score follows the generator's current distribution: ε-MSE on its detached outputs, t ~ U[0, T)
            var sample = x.detach();
            var tFake = randint(0, scheduler.NumTrainTimesteps, [config.BatchSize], int64, generator: generator).to(device);
            var noiseFake = randn(sample.shape, float32, generator: generator).to(device);
            var noisy = scheduler.AddNoise(sample, noiseFake, tFake);
            var (_, epsilon) = scheduler.ConvertModelOutput(fakeScore.Predict(noisy, tFake, cond), tFake, noisy);
            var fakeLoss = nn.functional.mse_loss(epsilon, noiseFake);
            var total = fakeLoss;
            double? ganDiscriminator = null;
            if (head is not null)
            {
                var real = prompts.Latents.index_select(0, rows).to(device);
                var d = nn.functional.softplus(Realism(sample, cond, adversarialGenerator)).mean()
                        + nn.functional.softplus(-Realism(real, cond, adversarialGenerator)).mean();
                total = total + d * config.GanDiscriminatorWeight;
                ganDiscriminator = d.item<float>();
            }
            if (!double.IsFinite(total.item<float>()))
                throw new NotFiniteNumberException($"DMD step {step + 1}: the fake score's loss is not finite (ε-MSE " +
                                                   $"{fakeLoss.item<float>()}, GAN discriminator {ganDiscriminator})");
            // also clears what the generator's GAN term left on the fake score and head
            fakeScoreOptimizer.zero_grad();
            total.backward();
            nn.utils.clip_grad_norm_(fakeScoreParameters, config.MaxGradNorm);
            SetLearningRate(fakeScoreOptimizer, config.FakeScoreLearningRate);
            fakeScoreOptimizer.step();
            return new DmdLosses(generatorTurn, fakeLoss.item<float>(), dm, regression, ganGenerator, ganDiscriminator, reward,
                meanReward, rewardMeans);
        }

        /// <summary>The generator: x̂0 of the 1-step student at the trailing grid's timestep (999) from noise.</summary>
        Tensor Generate(Tensor noise, PromptCondition cond)
        {
            var t = full([noise.shape[0]], generatorTimestep, int64, device);
            return scheduler.ConvertModelOutput(student.Predict(noise, t, cond), t, noise).PredOriginalSample;
        }

        /// <summary>DMD's gradient at x: the real score (the teacher, CFG) and the fake score's x̂0 at x_t, in float64.</summary>
        Tensor DistributionMatchingGradient(Tensor x, Tensor t, Tensor noise, PromptCondition cond)
        {
            using var _ = no_grad();
            var noisy = scheduler.AddNoise(x.detach(), noise, t);
            var guidance = full([x.shape[0]], config.RealGuidance - 1, float32, device); // LCM form: w = CFG scale − 1
            var (realX0, _) = TrajectorySampling.GuidedPrediction(unet, conditioner.Unconditional(noisy), cond, scheduler, noisy, t,
                guidance, float64);
            var (fakeX0, _) = scheduler.ConvertModelOutput(fakeScore.Predict(noisy, t, cond).to(float64), t, noisy.to(float64));
            return DistributionMatchingLoss.Gradient(x, realX0, fakeX0);
        }

        /// <summary>The GAN head's per-pixel logits on the fake score's mid-block features of <paramref name="latents"/> noised
        /// to t ~ U[0, T) (DMD2's classifier on the fake UNet's bottleneck).</summary>
        Tensor Realism(Tensor latents, PromptCondition cond, Generator g)
        {
            var t = randint(0, scheduler.NumTrainTimesteps, [latents.shape[0]], int64, generator: g).to(device);
            var noise = randn(latents.shape, latents.dtype, generator: g).to(device);
            var features = new UNetFeatures();
            fakeScore.Predict(scheduler.AddNoise(latents, noise, t), t, cond, features);
            return head!.call(features.Mid!);
        }

        void SetLearningRate(OptimizerHelper optimizer, double rate)
        {
            foreach (var group in optimizer.ParamGroups) group.LearningRate = LearningRateSchedules.Warmup(rate, config.WarmupSteps, step);
        }

        DmdMetrics Metrics(double stepsPerSecond)
        {
            (double?, double?) Ends(IEnumerable<double?> values)
            {
                var xs = values.Where(v => v is not null).Select(v => v!.Value).ToList();
                if (xs.Count == 0) return (null, null);
                int window = Math.Max(1, xs.Count / 10);
                return (xs.Take(window).Average(), xs.TakeLast(window).Average());
            }
            var (dm0, dm1) = Ends(history.Select(h => h.DistributionMatching));
            var (reg0, reg1) = Ends(history.Select(h => h.Regression));
            var (fake0, fake1) = Ends(history.Select(h => (double?)h.FakeScore));
            return new DmdMetrics(history.Count, history.Count(h => h.GeneratorUpdated), dm0, dm1, reg0, reg1, fake0!.Value,
                fake1!.Value, stepsPerSecond, history.ToList());
        }

        const string StudentFile = "student.safetensors", HeadFile = "gan_head.safetensors",
            GeneratorOptimizerFile = "generator_optimizer.bin", FakeScoreOptimizerFile = "fake_score_optimizer.bin",
            StateFile = "state.json";
        const string RngKey = "state", RegressionRngKey = "regression_state", AdversarialRngKey = "adversarial_state";
        /// <summary>Seed offsets of the other streams (any fixed ones keep them apart): a variant with a term trains on the same
        /// batches as one without.</summary>
        const ulong RegressionSeedOffset = 0x2545F4914F6CDD1D, AdversarialSeedOffset = 0x9E3779B97F4A7C15,
            FakeScoreSeedOffset = 0x632BE59BD9B4E019, PairsSeedOffset = 0x5851F42D4C957F2D;

        sealed record CheckpointState(int Step, long Seed, List<DmdLosses> History);

        Dictionary<string, Generator> Generators => new()
        {
            [RngKey] = generator, [RegressionRngKey] = regressionGenerator, [AdversarialRngKey] = adversarialGenerator,
        };

        void SaveCheckpoint() => CheckpointFiles.Save(layout.Checkpoint, tmp =>
        {
            SafeTensors.Save(Path.Combine(tmp, StudentFile), StateDict.Of(student.Trainable));
            SafeTensors.Save(Path.Combine(tmp, FakeScoreFile), StateDict.Of(fakeScore.Trainable));
            if (head is not null) SafeTensors.Save(Path.Combine(tmp, HeadFile), StateDict.Of(head));
            generatorOptimizer.save_state_dict(Path.Combine(tmp, GeneratorOptimizerFile));
            fakeScoreOptimizer.save_state_dict(Path.Combine(tmp, FakeScoreOptimizerFile));
            CheckpointFiles.SaveGenerators(tmp, Generators);
            CheckpointFiles.WriteJson(Path.Combine(tmp, StateFile), new CheckpointState(step, config.Seed, history));
        });

        void LoadCheckpoint()
        {
            if (CheckpointFiles.Find(layout.Checkpoint) is not { } path) return;
            var state = CheckpointFiles.ReadJson<CheckpointState>(Path.Combine(path, StateFile));
            if (state.Seed != config.Seed)
                throw new InvalidDataException($"{path}: the checkpoint is of a DMD stage with seed {state.Seed}; this stage has " +
                                               $"seed {config.Seed}");
            CheckpointFiles.LoadInto(student.Trainable, Path.Combine(path, StudentFile));
            CheckpointFiles.LoadInto(fakeScore.Trainable, Path.Combine(path, FakeScoreFile));
            if (head is not null) CheckpointFiles.LoadInto(head, Path.Combine(path, HeadFile));
            generatorOptimizer.load_state_dict(Path.Combine(path, GeneratorOptimizerFile));
            fakeScoreOptimizer.load_state_dict(Path.Combine(path, FakeScoreOptimizerFile));
            CheckpointFiles.LoadGenerators(path, Generators);
            step = state.Step;
            history.Clear();
            history.AddRange(state.History);
        }

        void SaveFinal(DmdMetrics metrics) => layout.SaveFinal(student, config.LoraFormat, "dmd", 1, metrics,
            final => SafeTensors.Save(Path.Combine(final, FakeScoreFile), StateDict.Of(fakeScore.Trainable)));

        public void Dispose()
        {
            generator.Dispose();
            regressionGenerator.Dispose();
            adversarialGenerator.Dispose();
            generatorOptimizer.Dispose();
            fakeScoreOptimizer.Dispose();
            fakeScore.Dispose();
            head?.Dispose();
            pairs?.Dispose();
        }
    }
}
