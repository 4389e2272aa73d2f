using System.CommandLine;
using System.Diagnostics;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Unets;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd bench</c>: UNet forward and LoRA training-step throughput, and native memory over a long
/// LoRA training run (which must stay flat: every step runs in a dispose scope).</summary>
public static class BenchCommand
{
    /// <summary>The tiny SD1.5-topology UNet of the fixtures (2.2M parameters) unless --unet-config names another.</summary>
    static readonly UNet2DConditionConfig TinyUnet = new()
    {
        BlockOutChannels = [16, 32, 64, 64], AttentionHeadDim = 4, CrossAttentionDim = 32, NormNumGroups = 8, SampleSize = 8,
    };

    public static Command Create()
    {
        var config = new Option<FileInfo?>("--unet-config") { Description = "a UNet config.json (default: the tiny SD1.5-topology UNet)" };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 8 };
        var size = new Option<int>("--latent-size") { Description = "latent height/width", DefaultValueFactory = _ => 8 };
        var steps = new Option<int>("--train-steps")
        {
            Description = "LoRA training steps for the memory check", DefaultValueFactory = _ => 1000
        };
        var seconds = new Option<double>("--seconds") { Description = "time per throughput measurement", DefaultValueFactory = _ => 5 };
        var devices = new DeviceOptions();
        var command = new Command("bench", "UNet throughput and LoRA training memory") { config, batch, size, steps, seconds };
        devices.AddTo(command);
        command.Subcommands.Add(EvalsBenchCommand.Create());
        command.SetAction(parse =>
        {
            var (device, dtype) = devices.Resolve(parse);
            var cfg = parse.GetValue(config) is { } file ? ModelConfig.Read<UNet2DConditionConfig>(file.FullName) : TinyUnet;
            Run(cfg, device, dtype, parse.GetValue(batch), parse.GetValue(size), parse.GetValue(steps), parse.GetValue(seconds));
        });
        return command;
    }

    static void Run(UNet2DConditionConfig config, Device device, ScalarType dtype, int batch, int size, int trainSteps, double seconds)
    {
        manual_seed(0);
        using var unet = new UNet2DConditionModel(config, device, dtype);
        long parameters = unet.parameters().Sum(p => p.numel());
        int context = config.CrossAttentionDim[0];
        var sample = randn(batch, config.InChannels, size, size).to(dtype, device);
        var hidden = randn(batch, 77, context).to(dtype, device);
        var t = randint(0, 1000, [batch]).to(device);
        Console.WriteLine($"UNet {parameters:N0} parameters, batch {batch}, latents {config.InChannels}x{size}x{size}, " +
                          $"{device.type} {dtype}, {get_num_threads()} threads");

        unet.eval();
        double forward = Throughput(seconds, () =>
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            unet.forward(sample, t, hidden);
            Sync(device);
        });
        Console.WriteLine($"forward:            {forward:F2} it/s  ({forward * batch:F1} samples/s)");

        LoraAdapter.FreezeBase(unet);
        using var adapter = LoraAdapter.Create(unet, new LoraConfig(Rank: 8, Alpha: 8), device, dtype);
        adapter.Attach(unet);
        unet.train();
        var optimizer = optim.AdamW(adapter.parameters(), lr: 1e-4);
        var target = randn_like(sample);
        void Step()
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            var loss = nn.functional.mse_loss(unet.forward(sample, t, hidden), target);
            loss.backward();
            optimizer.step();
            Sync(device);
        }
        double train = Throughput(seconds, Step);
        Console.WriteLine($"forward+backward:   {train:F2} it/s  ({train * batch:F1} samples/s, " +
                          $"LoRA rank 8 on {adapter.Layers.Count} modules, AdamW)");

        // Native memory: resident set after 10 steps vs after trainSteps (managed heap collected first).
        long Rss()
        {
            GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
            using var p = Process.GetCurrentProcess();
            p.Refresh();
            return p.WorkingSet64;
        }
        for (int i = 0; i < 10; i++) Step();
        long after10 = Rss();
        var watch = Stopwatch.StartNew();
        for (int i = 10; i < trainSteps; i++) Step();
        long afterN = Rss();
        Console.WriteLine($"memory (RSS):       {after10 / 1048576.0:F1} MiB after 10 steps, " +
                          $"{afterN / 1048576.0:F1} MiB after {trainSteps} " +
                          $"(growth {(afterN - after10) / 1048576.0:+0.0;-0.0} MiB, {(double)afterN / after10:F3}x), " +
                          $"{(trainSteps - 10) / watch.Elapsed.TotalSeconds:F2} steps/s");
    }

    static double Throughput(double seconds, Action action)
    {
        action(); action(); // warm-up
        var watch = Stopwatch.StartNew();
        int n = 0;
        while (watch.Elapsed.TotalSeconds < seconds) { action(); n++; }
        return n / watch.Elapsed.TotalSeconds;
    }

    static void Sync(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }
}
