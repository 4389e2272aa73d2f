using System.Diagnostics;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.FeedbackLearning;
using HyperSd.Distillation.Metrics;
using HyperSd.Distillation.Rewards;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Toy;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.FeedbackLearning;

/// <summary>
/// ReFL on the toy world, judged apart from its reward: a 1-step student trained on the structural reward (the committed
/// recognizer) must follow held-out captions better by the committed independent judge (<see cref="ToyJudge"/>), which no
/// reward used.
/// </summary>
public sealed class ReflOutcomeTests(ITestOutputHelper output)
{
    const int Prompts = 256, EvaluationSeed = 9_100_001;

    public static readonly ReflConfig Config = new()
    {
        StudentSteps = 1, Steps = 200, BatchSize = 16, Seed = 3, LearningRate = 2e-3, RewardScale = 1, Alpha = 1,
        AnchorWeight = 0, CheckpointEvery = 1000,
    };

    [Fact]
    public void Feedback_on_the_structural_reward_raises_the_independent_judges_one_step_adherence()
    {
        using var teacher = StableDiffusionPipeline.FromPretrained(ToyWorld.PretrainedTeacherDir);
        using var recognizer = ToyRecognizer.FromPretrained(ToyWorld.PretrainedRecognizerDir);
        using var judge = ToyRecognizer.FromPretrained(ToyWorld.PretrainedJudgeDir);
        using var prompts = ToyWorld.CreateDataset(1024, 41, teacher.Tokenizer, teacher.Vae);
        using var g = new Generator(5, CPU);
        using var student = SegmentStudent.WithLora(teacher.Unet, new LoraConfig(16, 16), g);
        var reward = new WeightedReward([(new ToyStructuralReward(recognizer, logProbability: true), 1.0)]);
        var held = ToyWorld.EvaluationPrompts(Prompts, EvaluationSeed);

        var before = Adherence(teacher, student, held, judge, recognizer);
        var watch = Stopwatch.StartNew();
        var dir = Directory.CreateTempSubdirectory("refl-outcome-").FullName;
        try
        {
            var result = ReflTrainer.Train(Config, teacher.Unet, teacher.Vae, teacher.Conditioner,
                new HyperSd.Diffusion.Schedulers.DDPMScheduler(teacher.Scheduler.Config), prompts, reward, student, dir);
            var m = result.Metrics;
            output.WriteLine($"ReFL {Config.Steps} steps in {watch.Elapsed.TotalSeconds:F0} s ({m.StepsPerSecond:F2} steps/s): " +
                             $"reward {m.InitialReward:F3} -> {m.FinalReward:F3}");
        }
        finally { Directory.Delete(dir, true); }
        var after = Adherence(teacher, student, held, judge, recognizer);
        output.WriteLine($"1-step held-out adherence, judge: {before.Judge} -> {after.Judge}; reward's recognizer: " +
                         $"{before.Rewarded} -> {after.Rewarded}");
        Assert.True(after.Judge.Low > before.Judge.High,
            $"the judge's adherence did not rise beyond its interval: {before.Judge} -> {after.Judge}");
    }

    /// <summary>Strict adherence of the student's 1-step images (DDIM trailing, no guidance) by the judge and by the reward's
    /// recognizer, with Wilson intervals.</summary>
    static (MetricEstimate Judge, MetricEstimate Rewarded) Adherence(StableDiffusionPipeline teacher, SegmentStudent student,
        IReadOnlyList<string> prompts, ToyRecognizer judge, ToyRecognizer recognizer)
    {
        var sampler = SamplerSpec.DdimTrailing();
        var baseScheduler = teacher.Scheduler;
        teacher.Scheduler = sampler.Build(baseScheduler.Config);
        student.Lora!.Attach(teacher.Unet);
        try
        {
            using var images = new ModelEvaluator(null, null).Generate(teacher, prompts, sampler, 1,
                new EvaluationOptions { Seed = EvaluationSeed });
            using var _ = no_grad();
            MetricEstimate Score(ToyRecognizer r) =>
                WilsonInterval.Of((int)Math.Round(PromptAdherence.Score(r, images, prompts) * prompts.Count), prompts.Count);
            return (Score(judge), Score(recognizer));
        }
        finally
        {
            student.Lora.Detach();
            teacher.Scheduler = baseScheduler;
        }
    }
}
