using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using HyperSd.Diffusion;
using HyperSd.Diffusion.Loaders.SingleFile;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Toy;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Cli.Commands;

/// <summary>
/// <c>hypersd bench</c>: the components a run and a generation spend their time in, each the median of timed repeats after
/// a warm-up, with its ratio against a baseline measured in the same run: the UNet forward at the smallest batch, or the
/// reference path a faster one replaces. Ratios compare across machines and loads where absolute times do not.
/// Then native memory over a long LoRA training run, which must stay flat (every step runs in a dispose scope).
/// </summary>
public static class BenchCommand
{
    public enum Preset { Tiny, Toy, Sd15 }

    /// <param name="Baseline">The row this one is divided by, named as <see cref="Name"/> names it.</param>
    public sealed record Row(string Component, int Batch, double MedianMs, string Baseline, double Ratio)
    {
        public string Name => Key(Component, Batch);
        public double ImagesPerSecond => Batch * 1000 / MedianMs;
    }

    /// <param name="AllocatorTuned">Whether glibc's allocator runs with <see cref="NativeAllocator"/>'s settings.</param>
    /// <param name="OneArena">Whether every thread allocates from glibc's main heap (<see cref="NativeAllocator.OneArena"/>).</param>
    public sealed record Report(string Preset, string Device, string DType, int Threads, bool AllocatorTuned, int Repeats,
        List<Row> Rows, Memory? Memory, bool OneArena = false);

    public sealed record Memory(int Steps, double MiBAfter10, double MiBAfterAll, double StepsPerSecond);

    static string Key(string component, int batch) => $"{component}, batch {batch}";

    public static Command Create()
    {
        var preset = new Option<Preset>("--preset")
        {
            Description = "tiny (random weights, the fixtures' tiny SD1.5 topology), toy (the committed toy teacher), " +
                          "sd15 (SD1.5's shapes at 512 px, random weights)",
            DefaultValueFactory = _ => Preset.Tiny,
        };
        var batches = new Option<int[]>("--batches")
        {
            Description = "UNet forward batch sizes", DefaultValueFactory = _ => [1, 8], AllowMultipleArgumentsPerToken = true,
        };
        var decodeBatches = new Option<int[]>("--decode-batches")
        {
            Description = "VAE decode batch sizes", DefaultValueFactory = _ => [1, 8], AllowMultipleArgumentsPerToken = true,
        };
        var trainBatch = new Option<int>("--train-batch")
        {
            Description = "batch of the LoRA training step and the discriminator step", DefaultValueFactory = _ => 4,
        };
        var repeats = new Option<int>("--repeats") { Description = "timed repeats per component (the median is reported)",
            DefaultValueFactory = _ => 10 };
        var memorySteps = new Option<int>("--memory-steps")
        {
            Description = "LoRA training steps for the memory check (0: skip)", DefaultValueFactory = _ => 1000,
        };
        var output = new Option<FileInfo?>("--out") { Description = "also write the results as JSON here" };
        var devices = new DeviceOptions();
        var command = new Command("bench", "component times and their ratios against a baseline in the same run; LoRA training memory")
        {
            preset, batches, decodeBatches, trainBatch, repeats, memorySteps, output,
        };
        devices.AddTo(command);
        command.Subcommands.Add(EvalsBenchCommand.Create());
        command.SetAction(parse =>
        {
            var (device, dtype) = devices.Resolve(parse);
            int n = parse.GetValue(repeats), train = parse.GetValue(trainBatch), memory = parse.GetValue(memorySteps);
            var sizes = parse.GetValue(batches)!;
            var decodes = parse.GetValue(decodeBatches)!;
            if (n < 1) throw new ArgumentException($"--repeats: at least 1, got {n}");
            if (train < 1) throw new ArgumentException($"--train-batch: at least 1, got {train}");
            if (memory is < 0 or > 0 and < 20) throw new ArgumentException($"--memory-steps: 0 (skip) or at least 20, got {memory}");
            if (sizes.Length == 0 || sizes.Concat(decodes).Any(b => b < 1))
                throw new ArgumentException($"--batches and --decode-batches: one or more sizes of at least 1, got " +
                                            $"[{string.Join(", ", sizes)}] and [{string.Join(", ", decodes)}]");
            var report = Run(parse.GetValue(preset), device, dtype, sizes, decodes, train, n, memory);
            if (parse.GetValue(output) is { } file)
                File.WriteAllText(file.FullName, JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }));
        });
        return command;
    }

    public static Report Run(Preset preset, Device device, ScalarType dtype, int[] batches, int[] decodeBatches, int trainBatch,
        int repeats, int memorySteps)
    {
        manual_seed(0);
        using var pipe = Build(preset, device, dtype);
        var unet = pipe.Unet;
        var config = unet.Config;
        int size = config.SampleSize![0];
        Console.WriteLine($"{preset}: UNet {unet.parameters().Sum(p => p.numel()):N0} parameters, latents " +
                          $"{config.InChannels}x{size}x{size}, {device.type} {dtype}, {get_num_threads()} threads, " +
                          $"allocator {(NativeAllocator.Tuned ? "tuned" : "glibc's defaults")}" +
                          $"{(NativeAllocator.OneArena ? ", one arena" : "")}, median of {repeats} after a warm-up");
        if (NativeAllocator.Advice is { } advice) Console.WriteLine($"note: {advice}");
        var rows = new List<Row>();
        void Add(string component, int batch, double ms, string? baseline = null)
        {
            var reference = baseline is null ? rows.FirstOrDefault() : rows.Single(r => r.Name == baseline);
            rows.Add(new Row(component, batch, ms, reference?.Name ?? Key(component, batch), ms / (reference?.MedianMs ?? ms)));
            var row = rows[^1];
            Console.WriteLine($"{row.Name,-62} {ms,10:F2} ms {row.ImagesPerSecond,9:F2}/s   {row.Ratio,7:F3}x {row.Baseline}");
        }
        Tensor Latents(int b) => randn(b, config.InChannels, size, size).to(dtype, device);
        Tensor Context(int b) => pipe.EncodePrompt(Enumerable.Repeat(Prompt, b).ToList());
        Tensor Timesteps(int b) => randint(0, 1000, [b]).to(device);

        unet.eval();
        foreach (var b in batches.Order())
        {
            using var scope = NewDisposeScope();
            var (x, t, c) = (Latents(b), Timesteps(b), Context(b));
            Add("unet forward", b, Time(repeats, device, () => { using var _ = no_grad(); unet.forward(x, t, c).Dispose(); }));
        }
        Add("text encoder", 1, Time(repeats, device, () => Context(1).Dispose()));
        foreach (var b in decodeBatches.Order())
        {
            using var scope = NewDisposeScope();
            var x = Latents(b);
            Add("vae decode", b, Time(repeats, device, () => pipe.DecodeLatents(x).Dispose()));
        }
        foreach (var steps in new[] { 1, 4 })
        {
            var request = new GenerationRequest
            {
                Prompts = [Prompt], Steps = steps, Height = size * pipe.VaeScaleFactor, Width = size * pipe.VaeScaleFactor,
            };
            Add($"text to image, {steps} step{(steps > 1 ? "s" : "")} ({pipe.Scheduler.GetType().Name})", 1,
                Time(repeats, device, () => pipe.Generate(request).Dispose()));
        }
        Discriminator(pipe, trainBatch, repeats, device, dtype, Add, Latents, Context, Timesteps);

        // fp32 LoRA weights (the master weights) on a base of --dtype: the update is taken in fp32
        LoraAdapter.FreezeBase(unet);
        using var adapter = LoraAdapter.Create(unet, new LoraConfig(Rank: 8, Alpha: 8), device, float32);
        adapter.Attach(unet);
        unet.train();
        using var optimizer = optim.AdamW(adapter.parameters(), lr: 1e-4);
        var (sample, timesteps, context) = (Latents(trainBatch), Timesteps(trainBatch), Context(trainBatch));
        var target = randn_like(sample);
        void Step()
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            nn.functional.mse_loss(unet.forward(sample, timesteps, context).to(float32), target.to(float32)).backward();
            optimizer.step();
        }
        Add($"LoRA training step (rank 8 on {adapter.Layers.Count} modules, AdamW)", trainBatch, Time(repeats, device, Step));
        var memory = memorySteps > 0 ? MemoryCheck(Step, memorySteps, device) : null;
        return new Report(preset.ToString().ToLowerInvariant(), device.ToString(), dtype.ToString(), get_num_threads(),
            NativeAllocator.Tuned, repeats, rows, memory, NativeAllocator.OneArena);
    }

    const string Prompt = "a small red circle at the top left";

    /// <summary>TSCD's discriminator step in its two parts: the frozen teacher's features of fakes and reals, and PCM's 4
    /// heads per feature map, forward and backward (fused, against a call per head).</summary>
    static void Discriminator(StableDiffusionPipeline pipe, int b, int repeats, Device device, ScalarType dtype,
        Action<string, int, double, string?> add, Func<int, Tensor> latents, Func<int, Tensor> context, Func<int, Tensor> timesteps)
    {
        using var scope = NewDisposeScope();
        var unet = pipe.Unet;
        var (fake, real, t) = (latents(b), latents(b), timesteps(b));
        var cond = new PromptCondition(context(b));
        add("discriminator: teacher features of fake and real", b, Time(repeats, device, () =>
        {
            using var _ = no_grad();
            SegmentDiscriminator.Features(unet, fake, t, cond).Dispose();
            SegmentDiscriminator.Features(unet, real, t, cond).Dispose();
        }), null);

        using var fakeFeatures = SegmentDiscriminator.Features(unet, fake, t, cond);
        using var realFeatures = SegmentDiscriminator.Features(unet, real, t, cond);
        // the heads read fakes and reals in a call each, as the step does
        var maps = fakeFeatures.All.Concat(realFeatures.All).Select(f => f.detach()).ToList();
        var heads = SegmentDiscriminator.FeatureChannels(unet.Config)
            .Select(c => Enumerable.Range(0, 4).Select(_ => new DiscriminatorHead(c, c, device)).ToList()).ToList();
        foreach (var h in heads.SelectMany(h => h)) { h.Reset(new TorchSharp.torch.Generator(0)); h.to(dtype); }
        void Heads(Func<List<DiscriminatorHead>, Tensor, IEnumerable<Tensor>> logits)
        {
            using var step = NewDisposeScope();
            var loss = stack(maps.SelectMany((f, i) => logits(heads[i % heads.Count], f)).Select(l => l.to(float32).mean()).ToArray());
            loss.sum().backward();
            foreach (var p in heads.SelectMany(h => h).SelectMany(h => h.parameters())) p.grad = null;
        }
        const string each = "discriminator: 4 heads per feature map, a call per head (fwd+bwd)";
        add(each, 2 * b, Time(repeats, device, () => Heads((hs, f) => hs.Select(h => h.call(f)))), null);
        add("discriminator: 4 heads per feature map, fused (fwd+bwd)", 2 * b,
            Time(repeats, device, () => Heads(DiscriminatorHead.Fused)), Key(each, 2 * b));
        foreach (var h in heads.SelectMany(h => h)) h.Dispose();
    }

    /// <summary>The model of a preset. The random-weight presets read token ids from the toy tokenizer (any CLIP
    /// tokenizer's ids do: the cost is the sequence's length, 77).</summary>
    static StableDiffusionPipeline Build(Preset preset, Device device, ScalarType dtype)
    {
        if (preset == Preset.Toy)
            return StableDiffusionPipeline.FromPretrained(ToyWorld.PretrainedTeacherDir, device, dtype, nameof(TCDScheduler));
        var tokenizer = ToyVocabulary.CreateTokenizer();
        var configs = preset == Preset.Sd15 ? SingleFileConfigs.StableDiffusion15 : new SingleFileConfigs(TinyUnet, TinyVae,
            ToyVocabulary.TextConfig(tokenizer));
        var text = configs.TextEncoder with
        {
            VocabSize = Math.Max(configs.TextEncoder.VocabSize, tokenizer.VocabSize), BosTokenId = tokenizer.BosTokenId,
            EosTokenId = tokenizer.EosTokenId, PadTokenId = tokenizer.PadTokenId,
        };
        var schedule = SchedulerConfig.FromJson(StableDiffusionPipeline.StableDiffusion15Schedule, nameof(TCDScheduler), "SD1.5 schedule");
        return new StableDiffusionPipeline(new UNet2DConditionModel(configs.Unet, device, dtype),
            new AutoencoderKL(configs.Vae, device, dtype), new CLIPTextModel(text, device, dtype), tokenizer,
            SchedulerFactory.FromConfig(schedule), device, dtype);
    }

    /// <summary>The tiny SD1.5-topology UNet of the fixtures (2.2M parameters).</summary>
    static readonly UNet2DConditionConfig TinyUnet = new()
    {
        BlockOutChannels = [16, 32, 64, 64], AttentionHeadDim = 4, CrossAttentionDim = 32, NormNumGroups = 8, SampleSize = 8,
    };

    static readonly AutoencoderKLConfig TinyVae = new()
    {
        BlockOutChannels = [16, 32], DownBlockTypes = ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        UpBlockTypes = ["UpDecoderBlock2D", "UpDecoderBlock2D"], LayersPerBlock = 1, NormNumGroups = 8, LatentChannels = 4,
        SampleSize = 16,
    };

    /// <summary>Resident set after 10 steps against after <paramref name="steps"/> (managed heap collected first).</summary>
    static Memory MemoryCheck(Action step, int steps, Device device)
    {
        static double MiB()
        {
            GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
            using var p = Process.GetCurrentProcess();
            p.Refresh();
            return p.WorkingSet64 / 1048576.0;
        }
        for (int i = 0; i < 10; i++) step();
        double after10 = MiB();
        var watch = Stopwatch.StartNew();
        for (int i = 10; i < steps; i++) step();
        Sync(device);
        var memory = new Memory(steps, after10, MiB(), (steps - 10) / watch.Elapsed.TotalSeconds);
        Console.WriteLine($"memory (RSS): {memory.MiBAfter10:F1} MiB after 10 LoRA steps, {memory.MiBAfterAll:F1} MiB after {steps} " +
                          $"(growth {memory.MiBAfterAll - memory.MiBAfter10:+0.0;-0.0} MiB), {memory.StepsPerSecond:F2} steps/s");
        return memory;
    }

    /// <summary>Median milliseconds of <paramref name="repeats"/> calls after two warm-up calls; each call waits for the
    /// device.</summary>
    static double Time(int repeats, Device device, Action action)
    {
        action(); action();
        Sync(device);
        var times = new double[repeats];
        for (int i = 0; i < repeats; i++)
        {
            var watch = Stopwatch.StartNew();
            action();
            Sync(device);
            times[i] = watch.Elapsed.TotalMilliseconds;
        }
        Array.Sort(times);
        return repeats % 2 == 1 ? times[repeats / 2] : (times[repeats / 2 - 1] + times[repeats / 2]) / 2;
    }

    static void Sync(Device device)
    {
        if (device.type == TorchSharp.DeviceType.CUDA) cuda.synchronize(device);
    }
}
