using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Evaluation;

/// <summary>An untrained toy-world pipeline small enough for unit tests: the toy tokenizer and text encoder, a narrow
/// UNet on the 12×16×16 pixel-unshuffle latents.</summary>
public static class TinyToyPipeline
{
    public static UNet2DConditionConfig UnetConfig { get; } = ToyWorld.TeacherUnetConfig with
    {
        BlockOutChannels = [16, 16], DownBlockTypes = ["DownBlock2D", "CrossAttnDownBlock2D"], UpBlockTypes = ["CrossAttnUpBlock2D", "UpBlock2D"],
        AttentionHeadDim = 2, NormNumGroups = 4,
    };

    public static StableDiffusionPipeline Create(long seed = 0)
    {
        manual_seed(seed);
        var tokenizer = ToyVocabulary.CreateTokenizer();
        return new StableDiffusionPipeline(new UNet2DConditionModel(UnetConfig), new PixelUnshuffleAutoencoder(ToyWorld.AutoencoderConfig),
            new CLIPTextModel(ToyVocabulary.TextConfig(tokenizer)), tokenizer, SchedulerFactory.FromConfig(ToyWorld.Schedule()));
    }
}
