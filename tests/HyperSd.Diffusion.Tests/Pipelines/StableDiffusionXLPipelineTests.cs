using System.Text.Json.Nodes;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Pipelines;

/// <summary>The SDXL pipeline on tiny components: the fixture SDXL UNet and VAE, and two random text encoders whose
/// hidden sizes add to the UNet's cross_attention_dim.</summary>
public class StableDiffusionXLPipelineTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("sdxl-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    static StableDiffusionXLPipeline TinyPipeline(string scheduler = "EulerDiscreteScheduler")
    {
        var unet = UNet2DConditionModel.FromPretrained(Fixtures.Path("unet_sdxl"));
        // the fixture tokenizer's vocabulary and special ids; the widths split the UNet's context and pooled input
        var text = ModelConfig.Read<CLIPTextConfig>(Fixtures.Path("text_sd15", "text_encoder", "config.json"));
        int hidden = unet.Config.CrossAttentionDim[0] / 2;
        int projection = unet.Config.ProjectionClassEmbeddingsInputDim!.Value - 6 * unet.Config.AdditionTimeEmbedDim!.Value;
        var config = text with { HiddenSize = hidden, IntermediateSize = 2 * hidden, NumAttentionHeads = 2 };
        manual_seed(0);
        var textEncoder = new CLIPTextModel(config);
        var textEncoder2 = new CLIPTextModelWithProjection(config with { ProjectionDim = projection });
        var tokenizer = CLIPTokenizer.FromPretrained(Fixtures.Path("text_sd15", "tokenizer"));
        var schedule = StableDiffusionPipeline.StableDiffusion15Schedule; // SDXL's betas are SD1.x's
        schedule["timestep_spacing"] = "trailing";
        return new StableDiffusionXLPipeline(unet, Autoencoders.FromPretrained(Fixtures.Path("vae_sd15")), textEncoder, textEncoder2,
            tokenizer, tokenizer, SchedulerFactory.FromConfig(SchedulerConfig.FromJson(schedule, scheduler)));
    }

    static readonly GenerationRequest Request = new() { Prompts = ["a red circle"], Steps = 2, Height = 64, Width = 64, Seeds = [5] };

    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void Prompt_embeds_are_both_encoders_penultimate_states_and_the_projected_pool()
    {
        using var pipe = TinyPipeline();
        string[] prompts = ["a red circle", "a blue square on a green field"];
        var (embeds, pooled) = pipe.EncodePrompt(prompts);

        using var ids = pipe.Tokenizer.Encode(prompts);
        using var one = pipe.TextEncoder.call(ids);
        using var two = pipe.TextEncoder2.call(ids);
        int layers = pipe.TextEncoder.Config.NumHiddenLayers;
        Assert.Equal(layers + 1, one.HiddenStates.Count); // embeddings, then each layer
        var expected = cat([one.HiddenStates[layers - 1], two.HiddenStates[layers - 1]], -1);
        Assert.Equal(new long[] { 2, pipe.Tokenizer.ModelMaxLength, 32 }, embeds.shape);
        Assert.True(Same(expected, embeds));
        Assert.False(embeds[.., .., ..16].allclose(one.LastHiddenState, atol: 1e-3)); // no final norm
        Assert.Equal(new long[] { 2, 32 }, pooled.shape);
        Assert.True(Same(two.TextEmbeds!, pooled));
    }

    [Fact]
    public void Seeds_are_per_image_and_deterministic_whatever_the_batch()
    {
        using var pipe = TinyPipeline("TCDScheduler");
        var request = Request with { Prompts = ["a red circle", "a blue square"], Seeds = [7, 8], Eta = 0.5 };
        using var both = pipe.Generate(request);
        using var again = pipe.Generate(request);
        using var second = pipe.Generate(request with { Prompts = ["a blue square"], Seeds = [8] });
        Assert.Equal(new long[] { 2, 3, 64, 64 }, both.Images.shape);
        Assert.True(Same(both.Images, again.Images));
        Assert.True(both.Images[1].allclose(second.Images[0], atol: 1e-5));
        Assert.False(both.Images[0].allclose(both.Images[1], atol: 1e-3));
        Assert.Equal([7L, 8L], both.Parameters.Select(p => p.Seed));
    }

    /// <summary>Records the batch the UNet sees (its conv_in input) and the context its first cross-attention gets.</summary>
    sealed class UnetProbe : IDisposable
    {
        public readonly List<long> Batches = [];
        public Tensor? Context;
        readonly List<Action> removers = [];

        public UnetProbe(UNet2DConditionModel unet)
        {
            var modules = unet.named_modules().ToDictionary(m => m.name, m => m.module);
            var convIn = (nn.Module<Tensor, Tensor>)modules["conv_in"];
            removers.Add(convIn.register_forward_pre_hook((_, x) => { Batches.Add(x.shape[0]); return x; }).remove);
            var toK = (nn.Module<Tensor, Tensor>)modules.First(m => m.Key.EndsWith("attn2.to_k", StringComparison.Ordinal)).Value;
            removers.Add(toK.register_forward_pre_hook((_, x) => { Context ??= x.detach().clone().DetachFromDisposeScope(); return x; }).remove);
        }

        public void Dispose() { foreach (var r in removers) r(); Context?.Dispose(); }
    }

    [Fact]
    public void Guidance_above_one_adds_the_unconditional_half_first_and_changes_the_image()
    {
        using var pipe = TinyPipeline();
        using var plain = pipe.Generate(Request);
        using var guided = pipe.Generate(Request with { GuidanceScale = 5 });
        Assert.False(plain.Images.allclose(guided.Images, atol: 1e-4));

        using (var probe = new UnetProbe(pipe.Unet))
        {
            using var _ = pipe.Generate(Request with { GuidanceScale = 5 });
            Assert.Equal([2L, 2L], probe.Batches);
            var (cond, _) = pipe.EncodePrompt(Request.Prompts);
            // the empty negative prompt conditions on zeros (force_zeros_for_empty_prompt), and comes first
            Assert.True(probe.Context![0].eq(0).all().item<bool>());
            Assert.True(probe.Context[1].allclose(cond[0], atol: 1e-6));
        }
        using (var probe = new UnetProbe(pipe.Unet))
        {
            using var _ = pipe.Generate(Request with { GuidanceScale = 5, NegativePrompts = ["blurry"] });
            var (neg, _) = pipe.EncodePrompt(["blurry"]);
            Assert.True(probe.Context![0].allclose(neg[0], atol: 1e-6));
        }
    }

    [Fact]
    public void Guidance_of_one_skips_the_unconditional_pass()
    {
        using var pipe = TinyPipeline();
        using var probe = new UnetProbe(pipe.Unet);
        using var plain = pipe.Generate(Request);
        Assert.Equal([1L, 1L], probe.Batches);
        using var withNegative = pipe.Generate(Request with { NegativePrompts = ["blurry"] });
        Assert.True(Same(plain.Images, withNegative.Images));
    }

    [Fact]
    public void Time_ids_reach_the_unet()
    {
        using var pipe = TinyPipeline();
        using var defaults = pipe.Generate(Request);
        using var explicitSizes = pipe.Generate(Request, new SizeConditioning(OriginalSize: (64, 64), TargetSize: (64, 64)));
        using var smallOriginal = pipe.Generate(Request, new SizeConditioning(OriginalSize: (32, 32)));
        using var cropped = pipe.Generate(Request, new SizeConditioning(CropsCoordsTopLeft: (16, 0)));
        Assert.True(Same(defaults.Images, explicitSizes.Images));
        Assert.False(defaults.Images.allclose(smallOriginal.Images, atol: 1e-4));
        Assert.False(defaults.Images.allclose(cropped.Images, atol: 1e-4));
        Assert.Equal([32, 32, 16, 8, 64, 64], new SizeConditioning((32, 32), (16, 8)).TimeIds(64, 64));
    }

    [Fact]
    public void Save_then_load_gives_the_same_images()
    {
        var request = Request with { GuidanceScale = 3, NegativePrompts = ["blurry"] };
        using var pipe = TinyPipeline("TCDScheduler");
        pipe.SavePretrained(dir);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "model_index.json")))!;
        Assert.Equal("StableDiffusionXLPipeline", index["_class_name"]!.GetValue<string>());
        Assert.True(index["force_zeros_for_empty_prompt"]!.GetValue<bool>());
        Assert.Equal("CLIPTextModelWithProjection", index["text_encoder_2"]![1]!.GetValue<string>());
        using var reloaded = StableDiffusionXLPipeline.FromPretrained(dir);
        Assert.IsType<TCDScheduler>(reloaded.Scheduler);
        using var a = pipe.Generate(request);
        using var b = reloaded.Generate(request);
        Assert.True(Same(a.Images, b.Images));
        using var any = DiffusionPipeline.FromPretrained(dir); // the class comes from model_index.json
        Assert.IsType<StableDiffusionXLPipeline>(any);
    }

    [Fact]
    public void A_unet_without_text_time_conditioning_is_refused()
    {
        using var pipe = TinyPipeline();
        using var sd15 = UNet2DConditionModel.FromPretrained(Fixtures.Path("unet_sd15"));
        var e = Assert.Throws<NotSupportedException>(() => new StableDiffusionXLPipeline(
            sd15, pipe.Vae, pipe.TextEncoder, pipe.TextEncoder2, pipe.Tokenizer, pipe.Tokenizer2, pipe.Scheduler));
        Assert.Contains("addition_embed_type", e.Message);
        Assert.Contains("text_time", e.Message);
        Assert.Contains(nameof(StableDiffusionPipeline), e.Message);
    }

    [Fact]
    public void A_folder_missing_a_component_is_a_clear_error()
    {
        using var pipe = TinyPipeline();
        pipe.SavePretrained(dir);
        var path = Path.Combine(dir, "model_index.json");
        var index = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        index.Remove("text_encoder_2");
        File.WriteAllText(path, index.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => StableDiffusionXLPipeline.FromPretrained(dir));
        Assert.Contains("text_encoder_2", e.Message);
    }

    [Fact]
    public void The_trainers_conditioner_gives_the_pipelines_prompt_embeds_with_the_image_size_as_time_ids_and_zeros_as_unconditional()
    {
        using var pipe = TinyPipeline();
        string[] prompts = ["a red circle", "two blue squares"];
        using var ids = pipe.TokenIds(prompts);
        Assert.Equal([2L, 2, pipe.Tokenizer.ModelMaxLength], ids.shape);
        using var latents = zeros(2, 4, 8, 12);
        var condition = pipe.Conditioner.Condition(ids, latents);
        var (embeds, pooled) = pipe.EncodePrompt(prompts);
        Assert.True(Same(embeds, condition.Context) && Same(pooled, condition.Added!.TextEmbeds!));
        Assert.Equal(new float[] { 64, 96, 0, 0, 64, 96, 64, 96, 0, 0, 64, 96 }, condition.Added.TimeIds!.data<float>().ToArray());
        var uncond = pipe.Conditioner.Unconditional(latents);
        Assert.Equal(0, uncond.Context.abs().sum().item<float>());
        Assert.Equal(0, uncond.Added!.TextEmbeds!.abs().sum().item<float>());
        Assert.True(Same(condition.Added.TimeIds, uncond.Added.TimeIds!));
        Assert.Equal([1L, 2, pipe.Tokenizer.ModelMaxLength], pipe.Conditioner.EmptyPromptIds.shape);
    }
}
