using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Trajectories;

/// <summary>A tiny random teacher (2-level UNet, 8×8 latents, 1-layer CLIP), an SD1.5 noise schedule and random data,
/// all drawn from one seeded generator so tests do not depend on the global RNG (shared by parallel tests). With
/// <c>sdxl</c>, the SDXL layout: two half-width text encoders (the second projected) and text_time added conditioning.</summary>
public sealed class TinyTeacher : IDisposable
{
    public const int Bos = 98, Eos = 99, Tokens = 8;

    public UNet2DConditionModel Unet { get; }
    public CLIPTextModel TextEncoder { get; }
    /// <summary>SDXL's second text encoder, or null.</summary>
    public CLIPTextModelWithProjection? TextEncoder2 { get; }
    /// <summary>SDXL's time ids for the 8×8 latents (vae scale factor 8): 64×64 images, no crop.</summary>
    public static readonly long[] SdxlTimeIds = [64, 64, 0, 0, 64, 64];
    public DDPMScheduler Scheduler { get; } = new(new SchedulerConfig
    {
        BetaStart = 0.00085, BetaEnd = 0.012, BetaSchedule = "scaled_linear", SetAlphaToOne = false, ClipSample = false,
    });
    public LatentDataset Dataset { get; }
    public PromptConditioner Conditioner { get; }
    public Tensor EmptyPromptIds { get; } = tensor(new long[] { Bos, Eos, Eos, Eos, Eos, Eos, Eos, Eos }).view(1, Tokens);

    public TinyTeacher(long seed = 1, int rows = 16, bool sdxl = false)
    {
        using var g = new Generator((ulong)seed, CPU);
        var unet = new UNet2DConditionConfig
        {
            SampleSize = 8, BlockOutChannels = [8, 16], DownBlockTypes = ["CrossAttnDownBlock2D", "DownBlock2D"],
            UpBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D"], LayersPerBlock = 1, NormNumGroups = 4, CrossAttentionDim = 16,
            AttentionHeadDim = 2,
        };
        var text = new CLIPTextConfig
        {
            VocabSize = 100, HiddenSize = sdxl ? 8 : 16, IntermediateSize = 32, ProjectionDim = 16, NumHiddenLayers = sdxl ? 2 : 1,
            NumAttentionHeads = 2, MaxPositionEmbeddings = Tokens, BosTokenId = Bos, EosTokenId = Eos, PadTokenId = Eos,
        };
        Unet = new UNet2DConditionModel(sdxl
            ? unet with { AdditionEmbedType = "text_time", AdditionTimeEmbedDim = 4, ProjectionClassEmbeddingsInputDim = 6 * 4 + 8 }
            : unet);
        TextEncoder = new CLIPTextModel(text);
        Reset(Unet, g);
        Reset(TextEncoder, g);
        Unet.eval();
        TextEncoder.eval();
        var latents = randn([rows, 4, 8, 8], generator: g);
        var ids = Captions(rows, g);
        var captions = Enumerable.Range(0, rows).Select(i => $"caption {i}").ToList();
        if (sdxl)
        {
            TextEncoder2 = new CLIPTextModelWithProjection(text with { ProjectionDim = 8 });
            Reset(TextEncoder2, g);
            TextEncoder2.eval();
            EmptyPromptIds = stack([EmptyPromptIds, EmptyPromptIds], 1);
            Dataset = new LatentDataset(latents, ids, captions, inputIds2: Captions(rows, g));
            Conditioner = new SdxlPromptConditioner(TextEncoder, TextEncoder2, EmptyPromptIds, 8, forceZerosForEmptyPrompt: true);
        }
        else
        {
            Dataset = new LatentDataset(latents, ids, captions);
            Conditioner = new CLIPPromptConditioner(TextEncoder, EmptyPromptIds);
        }
    }

    static Tensor Captions(int rows, Generator g)
    {
        var words = randint(0, Bos, [rows, Tokens - 2], int64, generator: g);
        return cat([full(rows, 1, Bos, int64), words, full(rows, 1, Eos, int64)], 1);
    }

    /// <summary>Weights uniform ±1/√fan_in and biases ±0.1 from <paramref name="g"/>; norm scales stay 1.</summary>
    static void Reset(nn.Module module, Generator g)
    {
        using var _ = no_grad();
        foreach (var (name, p) in module.named_parameters())
        {
            if (p.dim() >= 2) { var b = 1 / Math.Sqrt(p.numel() / p.shape[0]); p.uniform_(-b, b, g); }
            else if (name.EndsWith("bias", StringComparison.Ordinal)) p.uniform_(-0.1, 0.1, g);
        }
    }

    public void Dispose()
    {
        Unet.Dispose();
        TextEncoder.Dispose();
        TextEncoder2?.Dispose();
        Dataset.Dispose();
        EmptyPromptIds.Dispose();
    }
}
