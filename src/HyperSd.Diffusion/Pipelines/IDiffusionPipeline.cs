using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Schedulers;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Pipelines;

/// <summary>What the SD1.x and SDXL pipelines share, so that trainers, evaluation and generation take either
/// (diffusers' DiffusionPipeline).</summary>
public interface IDiffusionPipeline : IDisposable
{
    UNet2DConditionModel Unet { get; }
    IAutoencoder Vae { get; }
    IScheduler Scheduler { get; set; }
    Device Device { get; }
    ScalarType DType { get; }
    PromptConditioner Conditioner { get; }
    GenerationResult Generate(GenerationRequest request);
    LoraAdapter LoadLora(string path, double scale = 1.0, string? id = null);
    void UnloadLoras();
    IDiffusionPipeline WithUnet(UNet2DConditionModel unet);
}

/// <summary>Loads whichever pipeline a diffusers folder holds (diffusers' DiffusionPipeline.from_pretrained).</summary>
public static class DiffusionPipeline
{
    /// <summary>The folder's model_index.json names the class: StableDiffusionXLPipeline, or an SD1.x/2.x pipeline.</summary>
    public static IDiffusionPipeline FromPretrained(string dir, Device? device = null, ScalarType? dtype = null, string? scheduler = null)
    {
        var className = TextToImage.ReadModelIndex(dir)["_class_name"]?.GetValue<string>();
        return className == nameof(StableDiffusionXLPipeline)
            ? StableDiffusionXLPipeline.FromPretrained(dir, device, dtype, scheduler)
            : StableDiffusionPipeline.FromPretrained(dir, device, dtype, scheduler);
    }
}
