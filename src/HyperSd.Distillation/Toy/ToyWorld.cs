using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Data;
using HyperSd.Distillation.Evaluation;
using HyperSd.Distillation.Metrics;
using HyperSd.Distillation.Teacher;
using HyperSd.Distillation.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Toy;

/// <summary>
/// The toy world's models as the real ones are laid out: a diffusers pipeline folder whose UNet, text encoder and
/// tokenizer are tiny and whose autoencoder is the exact pixel-unshuffle one (32×32×3 → 12×16×16), so that every
/// measured difference comes from the UNet. The teacher is trained from scratch here and then reused.
/// </summary>
/// <summary>The toy teacher's UNet layouts (<see cref="ToyWorld.TeacherUnet"/>).</summary>
public enum ToyTeacherArchitecture { TwoLevel, CrossAttention16, ThreeLevel }

public static class ToyWorld
{
    /// <summary>Black (−1) maps to 0 and the latents' standard deviation to about 0.8: with raw pixels (std 0.26 about a
    /// mean of −0.95) SD's noise schedule drowns the signal, and the first teacher sampled noise at every step count.</summary>
    public static PixelUnshuffleAutoencoderConfig AutoencoderConfig { get; } = new() { Factor = 2, ShiftFactor = -1, ScalingFactor = 3 };

    /// <summary>
    /// A small SD-topology UNet on 12×16×16 latents, cross-attention at 8×8 and in the mid block. Few latent channels
    /// for the model's width, as in SD (4 → 320): with 48×8×8 latents (factor 4) under a 64-channel UNet the ε
    /// identity at high t never became precise (ε-MSE 0.027 at t = 999 after 2,000 steps, x̂0-MSE 5.8) and samples
    /// stayed speckled; this one learns faster at the same cost per step.
    /// </summary>
    public static UNet2DConditionConfig TeacherUnetConfig { get; } = new()
    {
        InChannels = 12, OutChannels = 12, SampleSize = 16, BlockOutChannels = [32, 64], LayersPerBlock = 1,
        DownBlockTypes = ["DownBlock2D", "CrossAttnDownBlock2D"], UpBlockTypes = ["CrossAttnUpBlock2D", "UpBlock2D"],
        AttentionHeadDim = 4, CrossAttentionDim = 32, NormNumGroups = 16,
    };

    /// <summary>
    /// The teacher's UNet by architecture. <see cref="ToyTeacherArchitecture.TwoLevel"/> is <see cref="TeacherUnetConfig"/>
    /// (16×16 and 8×8, the mid block at 8×8, cross-attention at 8×8). <see cref="ToyTeacherArchitecture.CrossAttention16"/>
    /// adds cross-attention at 16×16 (more than twice the step cost). <see cref="ToyTeacherArchitecture.ThreeLevel"/> adds a
    /// 4×4 level with cross-attention, where the mid block also sits: there every position touches the zero padding, so
    /// where it is (which quadrant) is readable and the position words can be attended to per place, cheaply.
    /// </summary>
    public static UNet2DConditionConfig TeacherUnet(ToyTeacherArchitecture architecture) => architecture switch
    {
        ToyTeacherArchitecture.TwoLevel => TeacherUnetConfig,
        ToyTeacherArchitecture.CrossAttention16 => TeacherUnetConfig with
        {
            DownBlockTypes = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], UpBlockTypes = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        },
        ToyTeacherArchitecture.ThreeLevel => TeacherUnetConfig with
        {
            BlockOutChannels = [32, 64, 64],
            DownBlockTypes = ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            UpBlockTypes = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        },
        _ => throw new ArgumentOutOfRangeException(nameof(architecture), architecture, "unknown toy teacher architecture"),
    };

    /// <summary>The committed teacher (<c>hypersd toy text-encoder</c>, then <c>hypersd toy teacher --text-encoder</c> on
    /// it reproduce it), copied beside the assembly: later runs and the tests reuse it instead of retraining.</summary>
    public static string PretrainedTeacherDir => Path.Combine(AppContext.BaseDirectory, "Toy", "Pretrained", "teacher");

    /// <summary>The committed recognizer (<c>hypersd toy recognizer</c> reproduces it).</summary>
    public static string PretrainedRecognizerDir => Path.Combine(AppContext.BaseDirectory, "Toy", "Pretrained", "recognizer");

    /// <summary>The committed independent judge (<see cref="Rewards.ToyJudge"/>; <c>hypersd toy recognizer --judge</c>
    /// reproduces it): adherence that no reward model read.</summary>
    public static string PretrainedJudgeDir => Path.Combine(AppContext.BaseDirectory, "Toy", "Pretrained", "judge");

    /// <summary>SD's noise schedule (scaled-linear betas 0.00085–0.012), as the real models use.</summary>
    public static SchedulerConfig Schedule(string className = "DDIMScheduler") =>
        SchedulerConfig.FromJson(StableDiffusionPipeline.StableDiffusion15Schedule, className, "toy noise schedule");

    /// <summary>Encodes <paramref name="count"/> generated scenes (seeded) into a latent dataset with labels: training data,
    /// so from the train caption split (null: the whole caption space, as the first teacher was trained).</summary>
    public static LatentDataset CreateDataset(int count, int seed, CLIPTokenizer tokenizer, IAutoencoder autoencoder,
        ToyCaptionSplit? split = ToyCaptionSplit.Train)
    {
        var (images, scenes) = ToyShapes.Generate(count, seed, split);
        using (images)
        using (no_grad())
        {
            var captions = scenes.Select(s => s.Caption).ToList();
            return new LatentDataset(autoencoder.EncodeLatents(images), tokenizer.Encode(captions), captions,
                scenes.Select(s => (string?)s.ToJson()).ToList());
        }
    }

    /// <summary>Trains the toy teacher from scratch and writes it as a diffusers pipeline folder in <paramref name="dir"/>.</summary>
    public static StableDiffusionPipeline TrainTeacher(string dir, LatentDataset data, TeacherPretrainingOptions options,
        Action<TrainingProgress>? progress = null, CancellationToken cancellation = default, UNet2DConditionConfig? unetConfig = null,
        string? initFrom = null, string? textEncoderFrom = null)
    {
        var tokenizer = ToyVocabulary.CreateTokenizer();
        manual_seed(options.Seed);
        var textEncoder = new CLIPTextModel(ToyVocabulary.TextConfig(tokenizer));
        var unet = new UNet2DConditionModel(unetConfig ?? TeacherUnetConfig);
        if (initFrom is not null)
        {
            // a fine-tune: the UNet and text encoder start from another teacher's weights (same architecture)
            using var start = StableDiffusionPipeline.FromPretrained(initFrom);
            StateDict.Load(unet, StateDict.Of(start.Unet), new WeightSource(Path.Combine(initFrom, "unet")));
            StateDict.Load(textEncoder, StateDict.Of(start.TextEncoder), new WeightSource(Path.Combine(initFrom, "text_encoder")));
        }
        if (textEncoderFrom is not null)
        {
            // a pretrained text encoder (ToyTextEncoderPretraining), in place of initFrom's or a random one
            using var pretrained = CLIPTextModel.FromPretrained(textEncoderFrom);
            StateDict.Load(textEncoder, StateDict.Of(pretrained), new WeightSource(textEncoderFrom));
        }
        var schedule = new DDPMScheduler(Schedule("DDPMScheduler"));
        TeacherPretraining.Train(unet, textEncoder, tokenizer, data, schedule, options, progress, cancellation);
        return Save(dir, unet, textEncoder, tokenizer);
    }

    /// <summary>The teacher as its training run's checkpoint (<see cref="TeacherPretrainingOptions.CheckpointDir"/>) has it,
    /// EMA weights, written as a pipeline folder: to look at a run before it ends.</summary>
    public static StableDiffusionPipeline ExportTeacherCheckpoint(string checkpointDir, string dir, UNet2DConditionConfig unetConfig)
    {
        var tokenizer = ToyVocabulary.CreateTokenizer();
        var textEncoder = new CLIPTextModel(ToyVocabulary.TextConfig(tokenizer));
        var unet = new UNet2DConditionModel(unetConfig);
        TeacherPretraining.LoadCheckpointWeights(checkpointDir, unet, textEncoder);
        return Save(dir, unet, textEncoder, tokenizer);
    }

    static StableDiffusionPipeline Save(string dir, UNet2DConditionModel unet, CLIPTextModel textEncoder, CLIPTokenizer tokenizer)
    {
        var pipeline = new StableDiffusionPipeline(unet, new PixelUnshuffleAutoencoder(AutoencoderConfig), textEncoder, tokenizer,
            SchedulerFactory.FromConfig(Schedule()));
        var tmp = dir.TrimEnd('/') + ".partial";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        pipeline.SavePretrained(tmp);
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        Directory.Move(tmp, dir); // a half-written teacher never looks finished
        return pipeline;
    }

    /// <summary>Evaluation prompts, one and two objects in equal odds: by default from the held-out caption split
    /// (<see cref="ToyCaptions"/>), compositions no trained model has seen; <see cref="ToyCaptionSplit.Train"/> gives seen ones.</summary>
    public static IReadOnlyList<string> EvaluationPrompts(int count, int seed = 7_000_001,
        ToyCaptionSplit split = ToyCaptionSplit.HeldOut) =>
        ToyShapes.RandomScenes(count, seed, split).Select(s => s.Caption).ToList();

    /// <summary><paramref name="count"/> evaluation prompts of <paramref name="objects"/> objects each, from
    /// <paramref name="split"/>.</summary>
    public static IReadOnlyList<string> EvaluationPrompts(int count, int objects, int seed, ToyCaptionSplit split)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => ToyShapes.RandomScene(random, objects, split).Caption).ToList();
    }
}

/// <summary>The toy recognizer as the evaluator's feature model and prompt-adherence judge.</summary>
public sealed class ToyRecognizerMetrics(ToyRecognizer recognizer, bool matchSize = true) : IImageFeatures, IPromptAdherence
{
    public Tensor Features(Tensor images)
    {
        using var _ = no_grad();
        return recognizer.Features(images);
    }

    public IReadOnlyList<bool> Matches(IReadOnlyList<string> prompts, Tensor images)
    {
        using var _ = no_grad();
        var seen = recognizer.Recognize(images);
        return prompts.Select((p, i) => PromptAdherence.Matches(ToyShapes.ParseCaption(p), seen[i], matchSize)).ToList();
    }

    /// <summary>Features of <paramref name="count"/> real toy images (seeded) of the caption split the prompts come from
    /// (null: the whole space): the reference set for the Fréchet distance.</summary>
    public Tensor RealFeatures(int count, int seed, ToyCaptionSplit? split = null)
    {
        var (images, _) = ToyShapes.Generate(count, seed, split);
        using (images) return Features(images);
    }
}
