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
