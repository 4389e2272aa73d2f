using System.Diagnostics;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Training;
using HyperSd.Distillation.Trajectories;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Distillation.SegmentConsistency;

/// <summary>The losses of one training step: the generator's is null on steps that do not update the student, the
/// discriminator's on steps that do not update it (both while the adversarial weight is 0). When steps alternate, the
/// consistency loss of a discriminator step is measured but not trained on.</summary>
public sealed record StepLosses(double Consistency, double? Generator, double? Discriminator);

/// <summary>Reported after every step. <paramref name="ResumedFrom"/>: the step this run of the stage started at (0 when
/// fresh, the checkpoint's step when resumed).</summary>
public sealed record SegmentProgress(int Segments, int Step, int TotalSteps, StepLosses Losses, double StepsPerSecond, int ResumedFrom);

/// <summary>A finished stage: the consistency loss averaged over the first and last tenth of the steps, the last tenth's
/// adversarial losses, the speed of the last (possibly resumed) run and where its steps' time went (mean seconds per step
/// by phase, <see cref="StepProfile"/>), and every step's losses.</summary>
public sealed record SegmentStageMetrics(int Segments, int Steps, double InitialLoss, double FinalLoss, double? FinalGeneratorLoss,
    double? FinalDiscriminatorLoss, double StepsPerSecond, IReadOnlyList<StepLosses> History,
    IReadOnlyDictionary<string, double>? SecondsPerStep = null);

public sealed record SegmentStageResult(SegmentStudent Student, SegmentStageMetrics Metrics)
{
    public LoraAdapter? Lora => Student.Lora;
}

/// <summary>
/// Trajectory Segmented Consistency Distillation (Hyper-SD §3.1, in PCM's phased form). One stage with k segments:
/// the student's prediction at x_t, jumped by DDIM to its segment's end, is pulled towards the target model's jump
/// from the teacher's x_{t−s} to the same end (x_{t−s} itself when it already is the end), by a Huber/MSE term and an
/// adversarial term whose discriminator heads read the frozen teacher's features of both, re-noised to t_adv in the
/// segment. Discriminator and student updates alternate by step (PCM) or share each step (<see cref="AdversarialSchedule"/>).
/// All randomness comes from two seeded
/// generators that checkpoints save, so a resumed stage ends bit-identical to an uninterrupted one: one for the LoRA's
/// initialisation, the batches and the perturbation, one for the adversarial term (discriminator initialisation, t_adv,
/// re-noising), so a joint variant with the term trains on the same batches as one without and differs by the term alone.
/// Which update a step makes follows from its index, so a resumed stage keeps the parity.
/// </summary>
public static class SegmentConsistencyTrainer
{
    /// <summary>Runs (or resumes, or returns the finished result of) one stage in <paramref name="checkpointDir"/>.</summary>
    /// <param name="student">The weights to start from (the previous stage's student, trained in place); null = a new
    /// student from <see cref="SegmentStageConfig.Lora"/> (or a full copy of the teacher), seeded by the stage seed.</param>
    public static SegmentStageResult Train(SegmentStageConfig config, UNet2DConditionModel teacher, PromptConditioner conditioner,
        DDPMScheduler scheduler, IReadOnlyList<TrajectoryShard> shards, string checkpointDir, Action<SegmentProgress>? progress = null,
        CancellationToken cancellationToken = default, SegmentStudent? student = null)
    {
        config.Validate();
        using var run = new StageRun(config, teacher, conditioner, scheduler, shards, checkpointDir, student);
        return run.Execute(progress, cancellationToken);
    }

    /// <summary>Runs every stage of <paramref name="config"/> in order (stage k in <c>rootDir/stage-k{k}</c>), each starting
    /// from the previous stage's student; finished stages are loaded, an interrupted one resumes.</summary>
    public static IReadOnlyList<SegmentStageResult> TrainStages(
        TscdConfig config, UNet2DConditionModel teacher, PromptConditioner conditioner,
        DDPMScheduler scheduler, IReadOnlyList<TrajectoryShard> shards, string rootDir, Action<SegmentProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var results = new List<SegmentStageResult>();
        SegmentStudent? student = null;
        foreach (var k in config.Stages)
        {
            var result = Train(config.StageFor(k), teacher, conditioner, scheduler, shards, SegmentStageLayout.ForStage(rootDir, k).Dir,
                progress, cancellationToken, student);
            student = result.Student;
            results.Add(result);
        }
        return results;
    }

    /// <summary>The stage's state: student, EMA, optimisers, discriminator, generator and history.</summary>
    sealed class StageRun : IDisposable
    {
        readonly SegmentStageConfig config;
        readonly UNet2DConditionModel teacher;
        readonly PromptConditioner conditioner;
        readonly DDPMScheduler scheduler;
        readonly SegmentSchedule schedule;
        readonly TrajectoryShard data;
        readonly bool ownsData;
        readonly string dir;
        readonly SegmentStageLayout layout;
        readonly Device device;
        readonly Generator generator;
        readonly Generator adversarialGenerator;
        readonly SegmentStudent student;
        readonly List<(string Name, Parameter Param)> trainable;
        readonly Dictionary<string, Tensor>? ema;
        readonly OptimizerHelper optimizer;
        readonly SegmentDiscriminator? discriminator;
        readonly OptimizerHelper? discriminatorOptimizer;
        readonly List<StepLosses> history = [];
        readonly Tensor gridTimesteps;
        readonly StepProfile profile;
        int step;

        public StageRun(SegmentStageConfig config, UNet2DConditionModel teacher, PromptConditioner conditioner, DDPMScheduler scheduler,
            IReadOnlyList<TrajectoryShard> shards, string dir, SegmentStudent? student)
        {
            this.config = config; this.teacher = teacher; this.conditioner = conditioner; this.scheduler = scheduler; this.dir = dir;
            layout = new SegmentStageLayout(dir);
            schedule = new SegmentSchedule(scheduler.NumTrainTimesteps, config.SolverSteps, config.Segments);
            data = shards.Count == 1 ? shards[0] : TrajectoryShard.Concat(shards);
            ownsData = shards.Count != 1;
            if (data.SolverSteps != config.SolverSteps || data.NumTrainTimesteps != scheduler.NumTrainTimesteps)
                throw new ArgumentException($"the trajectories were made on a {data.NumTrainTimesteps}/{data.SolverSteps} grid, " +
                                            "the stage uses " +
                                            $"{scheduler.NumTrainTimesteps}/{config.SolverSteps} (num_train_timesteps/solver steps)");
            device = teacher.parameters().First().device;
            generator = new Generator((ulong)config.Seed, CPU);
            adversarialGenerator = new Generator((ulong)config.Seed + AdversarialSeedOffset, CPU);
            this.student = student
                ?? (config.Lora is { } lora ? SegmentStudent.WithLora(teacher, lora, generator) : SegmentStudent.FullCopy(teacher));
            trainable = this.student.Trainable.named_parameters().ToList();
            foreach (var (_, p) in trainable) p.requires_grad = true;
            ema = config.EmaDecay > 0 ? trainable.ToDictionary(p => p.Name, p => p.Param.detach().clone()) : null;
            optimizer = optim.AdamW(trainable.Select(p => p.Param), config.LearningRate, weight_decay: config.WeightDecay);
            if (config.Weights.Adversarial > 0)
            {
                discriminator = new SegmentDiscriminator(teacher.Config, config.DiscriminatorChannels, adversarialGenerator, device,
                    config.DiscriminatorHeadsPerFeature);
                discriminatorOptimizer = optim.AdamW(discriminator.parameters(), config.DiscriminatorLearningRate, beta1: 0, beta2: 0.999,
                    weight_decay: config.DiscriminatorWeightDecay);
            }
            gridTimesteps = tensor(schedule.Timesteps.Select(t => (long)t).ToArray());
            profile = new StepProfile(device);
        }

        public SegmentStageResult Execute(Action<SegmentProgress>? progress, CancellationToken cancellationToken)
        {
            if (File.Exists(layout.FinalMetrics))
            {
                LoadInto(student.Trainable, layout.FinalStudent);
                return new SegmentStageResult(student, ReadJson<SegmentStageMetrics>(layout.FinalMetrics));
            }
            LoadCheckpoint();
            int first = step;
            var clock = Stopwatch.StartNew();
            profile.Start();
            while (step < config.Steps)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    if (step > first) SaveCheckpoint();
                    cancellationToken.ThrowIfCancellationRequested();
                }
                var losses = TrainStep();
                profile.Mark("free"); // the step's dispose scope: LibTorch's allocator
                history.Add(losses);
                step++;
                progress?.Invoke(new SegmentProgress(
                    config.Segments, step, config.Steps, losses, (step - first) / clock.Elapsed.TotalSeconds, first));
                if (step % config.CheckpointEvery == 0 && step < config.Steps) SaveCheckpoint();
                profile.Mark("progress and checkpoints");
            }
            var metrics = Metrics((step - first) / Math.Max(clock.Elapsed.TotalSeconds, 1e-9), step - first);
            SaveFinal(metrics);
            return new SegmentStageResult(student, metrics);
        }

        StepLosses TrainStep()
        {
            using var scope = NewDisposeScope();
            bool trainStudent = config.IsStudentStep(step);
            bool trainDiscriminator = discriminator is not null && config.IsDiscriminatorStep(step);
            // one fixed draw order per step: rows, perturbation, adversarial timestep and noise
            var rows = randint(0, data.Count, [config.BatchSize], int64, generator: generator);
            var xt = data.NoisyLatents.index_select(0, rows).to(device);
            var grid = data.GridIndices.index_select(0, rows);
            var t = gridTimesteps.index_select(0, grid).to(device);
            var xPrev = data.PrevLatents.index_select(0, rows).to(device);
            var tPrev = data.PrevTimesteps.index_select(0, rows).to(device);
            var end = schedule.EndFor(grid).to(device);
            var onBoundary = schedule.PrevIsOnBoundary(grid).to(device);
            profile.Mark("data");
            var cond = conditioner.Condition(data.InputIds.index_select(0, rows), xt);
            profile.Mark("text encoder");

            var input = config.PerturbationScale > 0
                ? xt + config.PerturbationScale * randn(xt.shape, xt.dtype, generator: generator).to(device)
                : xt;
            // the target first: swapping EMA weights in and out bumps the parameters' versions, which a graph
            // already recorded through them would refuse
            Tensor target;
            using (no_grad())
            {
                var jumped = WithTargetWeights(
                    () => ConsistencyTarget.JumpToEnd(scheduler, student.Predict(xPrev, tPrev, cond), tPrev, xPrev, end));
                target = ConsistencyTarget.Select(onBoundary, xPrev, jumped);
            }
            profile.Mark("target (student at x_(t-s), no grad)");
            // a discriminator-only step needs the student's output, not its graph
            Tensor prediction;
            using (trainStudent ? null : no_grad())
                prediction = ConsistencyTarget.JumpToEnd(scheduler, student.Predict(input, t, cond), t, input, end);
            var consistency = ConsistencyTarget.Loss(prediction, target, config.HuberC);
            profile.Mark("student forward");
            // NotFiniteNumberException: worth a retry from the last checkpoint (the services treat it as transient)
            if (!double.IsFinite(consistency.item<float>()))
                throw new NotFiniteNumberException($"TSCD k = {config.Segments}, step {step + 1}: the consistency loss is not finite " +
                    $"(finite: x_t {Finite(xt)}, x_(t-s) {Finite(xPrev)}, condition {Finite(cond.Context)}, target {Finite(target)}, " +
                    $"prediction {Finite(prediction)}, student weights {trainable.All(p => Finite(p.Param))})");

            Tensor? fake = null, real = null, tAdv = null;
            if (discriminator is not null)
            {
                tAdv = (end + randint(0, schedule.SegmentLength, [config.BatchSize], int64, generator: adversarialGenerator).to(device))
                    .clamp_max(scheduler.NumTrainTimesteps - 1);
                (fake, real) = ConsistencyTarget.RenoisePair(scheduler, prediction, trainDiscriminator ? target : null, end, tAdv,
                    config.AdversarialNoise, adversarialGenerator);
            }
            profile.Mark("data");
            var generatorLoss = trainStudent ? UpdateStudent(consistency, fake, tAdv, cond) : null;
            double? discriminatorLoss = trainDiscriminator ? UpdateDiscriminator(fake!, real!, tAdv!, cond) : null;
            return new StepLosses(consistency.item<float>(), generatorLoss, discriminatorLoss);
        }

        /// <summary>The student's update: consistency loss plus, with the term, the generator's hinge loss on the re-noised
        /// fake; returns the generator loss.</summary>
        double? UpdateStudent(Tensor consistency, Tensor? fake, Tensor? tAdv, PromptCondition cond)
        {
            var loss = consistency * config.Weights.Mse;
            Tensor? generatorLoss = null;
            if (discriminator is not null)
            {
                // the features stay in the step's scope: backward still needs them
                generatorLoss = discriminator.GeneratorLoss(SegmentDiscriminator.Features(teacher, fake!, tAdv!, cond));
                loss = loss + generatorLoss * config.Weights.Adversarial;
                profile.Mark("generator: teacher features of the fake");
            }
            optimizer.zero_grad();
            loss.backward();
            profile.Mark("student backward");
            nn.utils.clip_grad_norm_(trainable.Select(p => p.Param), config.MaxGradNorm);
            double rate = LearningRateSchedules.At(config, config.StudentUpdateAt(step));
            foreach (var group in optimizer.ParamGroups) group.LearningRate = rate;
            optimizer.step();
            UpdateEma();
            profile.Mark("student optimizer");
            return generatorLoss?.item<float>();
        }

        double UpdateDiscriminator(Tensor fake, Tensor real, Tensor tAdv, PromptCondition cond)
        {
            UNetFeatures fakeFeatures, realFeatures;
            using (no_grad())
            {
                fakeFeatures = SegmentDiscriminator.Features(teacher, fake.detach(), tAdv, cond);
                realFeatures = SegmentDiscriminator.Features(teacher, real, tAdv, cond);
            }
            profile.Mark("discriminator: teacher features, no grad");
            using (fakeFeatures)
            using (realFeatures)
            {
                var d = discriminator!.DiscriminatorLoss(fakeFeatures, realFeatures);
                discriminatorOptimizer!.zero_grad();
                d.backward();
                if (config.DiscriminatorMaxGradNorm is { } norm) nn.utils.clip_grad_norm_(discriminator.parameters(), norm);
                discriminatorOptimizer.step();
                profile.Mark("discriminator heads and update");
                return d.item<float>();
            }
        }

        static bool Finite(Tensor x) => isfinite(x).all().item<bool>();

        /// <summary>Runs <paramref name="f"/> with the EMA weights in the student (decay 0: the online weights).</summary>
        Tensor WithTargetWeights(Func<Tensor> f)
        {
            if (ema is null) return f();
            var online = trainable.Select(p => p.Param.detach().clone()).ToList();
            using (no_grad()) foreach (var (name, p) in trainable) p.copy_(ema[name]);
            try { return f(); }
            finally
            {
                using (no_grad()) for (int i = 0; i < trainable.Count; i++) trainable[i].Param.copy_(online[i]);
                foreach (var o in online) o.Dispose();
            }
        }

        void UpdateEma()
        {
            if (ema is null) return;
            using var _ = no_grad();
            foreach (var (name, p) in trainable) ema[name].mul_(config.EmaDecay).add_(p, alpha: 1 - config.EmaDecay);
        }

        SegmentStageMetrics Metrics(double stepsPerSecond, int stepsRun)
        {
            int window = Math.Max(config.Alternates ? 2 : 1, history.Count / 10); // both updates when alternating
            // over the steps that made the update (every other one when alternating)
            double? Mean(IEnumerable<double?> xs) => xs.OfType<double>().ToList() is { Count: > 0 } made ? made.Average() : null;
            var last = history.TakeLast(window).ToList();
            return new SegmentStageMetrics(config.Segments, history.Count, history.Take(window).Average(h => h.Consistency),
                last.Average(h => h.Consistency), Mean(last.Select(h => h.Generator)), Mean(last.Select(h => h.Discriminator)),
                stepsPerSecond, history.ToList(), profile.PerStep(stepsRun));
        }

        const string StudentFile = "student.safetensors", EmaFile = "ema.safetensors", OptimizerFile = "optimizer.bin",
            DiscriminatorFile = "discriminator.safetensors", DiscriminatorOptimizerFile = "discriminator_optimizer.bin",
            StateFile = "state.json";
        const string RngKey = "state", AdversarialRngKey = "adversarial_state";
        /// <summary>The adversarial generator's seed is the stage seed plus this (any fixed offset keeps the streams apart).</summary>
        const ulong AdversarialSeedOffset = 0x9E3779B97F4A7C15;

        sealed record CheckpointState(int Segments, int Step, long Seed, List<StepLosses> History);

        /// <summary>Writes the checkpoint beside the current one, then swaps it in, so a crash leaves one whole checkpoint.</summary>
        void SaveCheckpoint() => CheckpointFiles.Save(layout.Checkpoint, tmp =>
        {
            SafeTensors.Save(Path.Combine(tmp, StudentFile), StateDict.Of(student.Trainable));
            if (ema is not null) SafeTensors.Save(Path.Combine(tmp, EmaFile), ema);
            optimizer.save_state_dict(Path.Combine(tmp, OptimizerFile));
            if (discriminator is not null)
            {
                SafeTensors.Save(Path.Combine(tmp, DiscriminatorFile), StateDict.Of(discriminator));
                discriminatorOptimizer!.save_state_dict(Path.Combine(tmp, DiscriminatorOptimizerFile));
            }
            CheckpointFiles.SaveGenerators(tmp, Generators);
            WriteJson(Path.Combine(tmp, StateFile), new CheckpointState(config.Segments, step, config.Seed, history));
        });

        Dictionary<string, Generator> Generators => new() { [RngKey] = generator, [AdversarialRngKey] = adversarialGenerator };

        void LoadCheckpoint()
        {
            if (CheckpointFiles.Find(layout.Checkpoint) is not { } path) return;
            var state = ReadJson<CheckpointState>(Path.Combine(path, StateFile));
            if (state.Segments != config.Segments || state.Seed != config.Seed)
                throw new InvalidDataException($"{path}: the checkpoint is of a stage with k = {state.Segments}, seed {state.Seed}; " +
                                               $"this stage has k = {config.Segments}, seed {config.Seed}");
            LoadInto(student.Trainable, Path.Combine(path, StudentFile));
            if (ema is not null)
            {
                var saved = SafeTensors.Load(Path.Combine(path, EmaFile));
                using var _ = no_grad();
                foreach (var (name, value) in ema)
                    value.copy_(saved.TryGetValue(name, out var s) ? s
                        : throw new InvalidDataException($"{path}/{EmaFile}: missing EMA tensor '{name}'"));
                foreach (var s in saved.Values) s.Dispose();
            }
            optimizer.load_state_dict(Path.Combine(path, OptimizerFile));
            if (discriminator is not null)
            {
                discriminator.CheckHeads(Path.Combine(path, DiscriminatorFile));
                LoadInto(discriminator, Path.Combine(path, DiscriminatorFile));
                discriminatorOptimizer!.load_state_dict(Path.Combine(path, DiscriminatorOptimizerFile));
            }
            CheckpointFiles.LoadGenerators(path, Generators);
            step = state.Step;
            history.Clear();
            history.AddRange(state.History);
        }

        void SaveFinal(SegmentStageMetrics metrics) => layout.SaveFinal(student, config.LoraFormat, "tscd", config.Segments, metrics);

        static void LoadInto(nn.Module module, string path) => CheckpointFiles.LoadInto(module, path);
        static void WriteJson<T>(string path, T value) => CheckpointFiles.WriteJson(path, value);
        static T ReadJson<T>(string path) => CheckpointFiles.ReadJson<T>(path);

        public void Dispose()
        {
            generator.Dispose();
            adversarialGenerator.Dispose();
            gridTimesteps.Dispose();
            optimizer.Dispose();
            discriminatorOptimizer?.Dispose();
            discriminator?.Dispose();
            if (ema is not null) foreach (var t in ema.Values) t.Dispose();
            if (ownsData) data.Dispose();
        }
    }
}
