using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Testing;

/// <summary>The tiny toy world of the end-to-end tests (embedded and distributed): an untrained, narrow teacher and recognizer, and a recipe
/// with a few scenes, trajectories and steps per stage (TSCD k = 2 → 1, ReFL on k = 1, DMD on ReFL's, merged into a unified LoRA); the teacher in the
/// SD1.5 or the SDXL layout.</summary>
public static class TinyToy
{
    /// <summary>Writes the models under <paramref name="root"/>; returns their folders. With <paramref name="sdxl"/> the
    /// teacher has the SDXL layout (two text encoders, the second with a projection; a UNet with text_time added
    /// conditioning), on the toy world's tokenizer and autoencoder.</summary>
    public static (string Teacher, string Recognizer) WriteModels(string root, bool sdxl = false)
    {
        var teacher = Path.Combine(root, sdxl ? "teacher-sdxl" : "teacher");
        var recognizer = Path.Combine(root, "recognizer");
        manual_seed(0);
        var tokenizer = ToyVocabulary.CreateTokenizer();
        var unet = ToyWorld.TeacherUnetConfig with
        {
            BlockOutChannels = [16, 16], DownBlockTypes = ["DownBlock2D", "CrossAttnDownBlock2D"],
            UpBlockTypes = ["CrossAttnUpBlock2D", "UpBlock2D"], AttentionHeadDim = 2, NormNumGroups = 4,
        };
        var text = ToyVocabulary.TextConfig(tokenizer);
        var vae = new PixelUnshuffleAutoencoder(ToyWorld.AutoencoderConfig);
        var scheduler = SchedulerFactory.FromConfig(ToyWorld.Schedule());
        if (sdxl)
        {
            var half = text with { HiddenSize = 16, IntermediateSize = 32, NumAttentionHeads = 2 };
            var xl = unet with
            {
                CrossAttentionDim = 32, AdditionEmbedType = "text_time", AdditionTimeEmbedDim = 4, UseLinearProjection = true,
                ProjectionClassEmbeddingsInputDim = 6 * 4 + 8,
            };
            using var pipeline = new StableDiffusionXLPipeline(new UNet2DConditionModel(xl), vae, new CLIPTextModel(half),
                new CLIPTextModelWithProjection(half with { ProjectionDim = 8, Architectures = [nameof(CLIPTextModelWithProjection)] }),
                tokenizer, tokenizer, scheduler);
            pipeline.SavePretrained(teacher);
        }
        else
        {
            using var pipeline = new StableDiffusionPipeline(new UNet2DConditionModel(unet), vae, new CLIPTextModel(text), tokenizer, scheduler);
            pipeline.SavePretrained(teacher);
        }
        using (var model = new ToyRecognizer(new ToyRecognizerConfig()))
            model.SavePretrained(recognizer);
        return (teacher, recognizer);
    }

    /// <summary>The unified LoRA of the two rank-4 stages at rank 4 (so the SVD discards energy), both formats, fused.</summary>
    public const string MergeSection = "merge: {rank: 4, formats: [kohya, peft], fuse: true}";

    /// <summary>ReFL on the k = 1 student: a few steps on the toy structural reward, a checkpoint every step.</summary>
    public const string ReflSection =
        "refl: {students: [1], steps: 3, batch_size: 2, learning_rate: 1.0e-3, alpha: 1, reward_scale: 1, checkpoint_every: 1, " +
        "rewards: {toy-structure-logp: 1.0, toy-preference: 0.5}}";

    /// <summary>The learnt toy rewards (ReFL's preference reward, the evaluation's preference and aesthetic scores): a few
    /// Bradley–Terry steps each.</summary>
    public const string RewardsSection = "rewards: {toy_training: {preference_steps: 3, aesthetic_steps: 3, batch_size: 4}}";

    /// <summary>DMD on ReFL's 1-step student: a few iterations (the generator every second), a small fake score, a few teacher
    /// ODE pairs, a checkpoint every step.</summary>
    public const string DmdSection =
        "dmd: {steps: 4, batch_size: 2, generator_learning_rate: 1.0e-3, fake_score_learning_rate: 1.0e-3, warmup_steps: 0, " +
        "generator_update_every: 2, regression_pairs: 4, regression_teacher_steps: 3, fake_score_rank: 4, fake_score_alpha: 4, " +
        "checkpoint_every: 1}";

    /// <summary>The recipe; <paramref name="tscdSteps"/> lengthens the TSCD stages (a checkpoint every 2 steps).
    /// <paramref name="teacherDir"/> null leaves the teacher to the worker's default (tests that run no model).
    /// <paramref name="imageFolder"/> (with <paramref name="promptsFile"/>) makes it a real-data recipe: the teacher as a
    /// diffusers folder, the dataset an image folder with sidecar captions, the evaluation prompts from a file, and no learnt
    /// toy rewards (the toy recipe trains them, ReFL uses the preference one, the evaluation is scored by them). <paramref name="merge"/>
    /// false leaves out the merge section (no unified LoRA), <paramref name="refl"/> false the ReFL stage (a real-data recipe has
    /// none: the toy rewards need the toy world), <paramref name="dmd"/> false the DMD stage.</summary>
    public static string Recipe(string? teacherDir = null, int tscdSteps = 4, string architecture = "sd15", string? imageFolder = null,
        string? promptsFile = null, bool merge = true, bool refl = true, bool dmd = true) => $$"""
        name: tiny
        seed: 0
        model:
          source: {{(imageFolder is null ? "toy" : "diffusers")}}
          architecture: {{architecture}}
        {{(teacherDir is null ? "" : $"  path: {teacherDir}")}}
        dataset:
        {{(imageFolder is null ? "  source: toy\n  count: 12" : $"  source: folder\n  path: {imageFolder}\n  resolution: 32")}}
          seed: 1
          shard_size: 8
        trajectories:
          count: 24
          solver_steps: 50
          guidance_min: 1.5
          guidance_max: 2.5
          batch_size: 12
          empty_prompt_probability: 0
        tscd:
          segments: [2, 1]
          steps_per_stage: {{tscdSteps}}
          batch_size: 4
          learning_rate: 1.0e-3
          lora: {rank: 4, alpha: 4}
          weights:
            2: {mse: 1.0, adversarial: 0.0}
            1: {mse: 0.8, adversarial: 0.1}
          discriminator_learning_rate: 1.0e-4
          checkpoint_every: 2
        {{(refl && imageFolder is null ? ReflSection : "")}}
        {{(imageFolder is null ? RewardsSection : "")}}
        {{(dmd ? DmdSection : "")}}
        {{(merge ? MergeSection : "")}}
        evaluation:
          steps: [1, 2]
          samplers: [ddim-trailing, tcd]
          tcd_eta: 0.3
        {{(promptsFile is null ? "  prompts: 6" : $"  prompts_file: {promptsFile}")}}
          teacher_steps: 3
          teacher_guidance: 3.0
          real_images: 16
          batch_size: 6
          grid_prompts: 2
        {{(imageFolder is null ? "  rewards: [toy-preference, toy-aesthetic]" : "")}}
        generation:
          prompts: ["a red circle in the center", "a blue square at the top left"]
          images_per_prompt: 2
          steps: 2
          batch_size: 3
        """;
}
