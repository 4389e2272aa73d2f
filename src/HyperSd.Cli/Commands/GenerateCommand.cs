using System.CommandLine;
using System.Globalization;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Distillation.Evaluation;
using HyperSd.Services.Generator;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd generate</c>: prompts to PNGs with a diffusers folder or a single-file checkpoint, any
/// scheduler, optional LoRAs; each PNG carries the parameters that reproduce it.</summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model")
        {
            Description = "toy (the embedded toy teacher), a diffusers pipeline folder (SD1.x or SDXL), or a single-file SD1.x .safetensors"
        };
        var fromPng = new Option<FileInfo[]>("--from-png")
        {
            Description = "make an image again from its own PNG text (model, LoRAs, sampler, prompt, seed; repeat for several)"
        };
        var tokenizer = new Option<DirectoryInfo?>("--tokenizer")
        {
            Description = "CLIP tokenizer folder (needed with a single-file checkpoint)"
        };
        var prompts = new Option<string[]>("--prompt", "-p")
        {
            Description = "a prompt (repeat for several)", AllowMultipleArgumentsPerToken = false
        };
        var promptFile = new Option<FileInfo?>("--prompts-file") { Description = "a text file with one prompt per line" };
        var negative = new Option<string>("--negative") { Description = "negative prompt for every image", DefaultValueFactory = _ => "" };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 4 };
        var guidance = new Option<double>("--guidance")
        {
            Description = "CFG scale; ≤ 1 turns guidance off", DefaultValueFactory = _ => 1.0
        };
        var scheduler = new Option<string?>("--scheduler") { Description = $"one of: {string.Join(", ", SchedulerFactory.Supported)}" };
        var spacing = new Option<string?>("--timestep-spacing")
        {
            Description = "leading, trailing or linspace (Hyper-SD LoRAs: trailing)"
        };
        var eta = new Option<double?>("--eta") { Description = "DDIM eta or TCD gamma" };
        var seed = new Option<long>("--seed")
        {
            Description = "seed of the first image; image i uses seed + i", DefaultValueFactory = _ => 0
        };
        var size = new Option<int>("--size") { Description = "height and width", DefaultValueFactory = _ => 512 };
        var loras = new Option<string[]>("--lora") { Description = "a LoRA file, optionally with :scale (repeat for several)" };
        var batch = new Option<int>("--batch") { Description = "images per forward pass", DefaultValueFactory = _ => 4 };
        var output = new Option<DirectoryInfo>("--out", "-o") { DefaultValueFactory = _ => new DirectoryInfo("outputs") };
        var devices = new DeviceOptions();
        var command = new Command("generate", "generate images from prompts")
        {
            model, fromPng, tokenizer, prompts, promptFile, negative, steps, guidance, scheduler, spacing, eta, seed, size, loras, batch,
                output,
        };
        devices.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var (device, dtype) = devices.Resolve(parse);
            var outDir = parse.GetValue(output)!.FullName;
            if (parse.GetValue(fromPng) is { Length: > 0 } pngs)
            {
                foreach (var png in pngs)
                    Console.WriteLine(await ImageModels.RegenerateAsync(png.FullName, outDir, device, dtype, ct));
                return;
            }
            var all = (parse.GetValue(prompts) ?? []).ToList();
            if (parse.GetValue(promptFile) is { } file) all.AddRange(File.ReadAllLines(file.FullName).Where(l => l.Trim().Length > 0));
            if (all.Count == 0) throw new ArgumentException("no prompts: give --prompt or --prompts-file");
            var (modelId, modelPath) = ImageModels.Resolve(
                parse.GetValue(model) ?? throw new ArgumentException("--model is required (or --from-png)"));
            var tokenizerDir = parse.GetValue(tokenizer)?.FullName;
            using var pipeline = ImageModels.Open(modelPath, tokenizerDir, device, dtype);
            var reference = await ImageModels.DescribeAsync(modelId, modelPath,
                tokenizerDir, ct);
            if (parse.GetValue(scheduler) is not null || parse.GetValue(spacing) is not null)
            {
                var className = parse.GetValue(scheduler) ?? pipeline.Scheduler.Config.ClassName!;
                pipeline.Scheduler = new SamplerSpec(className, className, parse.GetValue(spacing)).Build(pipeline.Scheduler.Config);
            }
            foreach (var spec in parse.GetValue(loras) ?? [])
            {
                int colon = spec.LastIndexOf(':');
                bool scaled = colon > 0 && double.TryParse(spec[(colon + 1)..], CultureInfo.InvariantCulture, out _);
                pipeline.LoadLora(
                    scaled ? spec[..colon] : spec,
                    scaled ? double.Parse(spec[(colon + 1)..], CultureInfo.InvariantCulture) : 1.0);
            }
            int px = parse.GetValue(size);
            long firstSeed = parse.GetValue(seed);
            var jobs = all.Select((p, i) => new GenerationItem($"image-{i:D5}-{firstSeed + i}.png", p, firstSeed + i)).ToList();
            BatchGeneration.Run(pipeline.Generate, jobs, outDir, new GenerationRequest
            {
                Prompts = [], Steps = parse.GetValue(steps), GuidanceScale = parse.GetValue(guidance), Eta = parse.GetValue(eta),
                Height = px, Width = px, Model = reference,
            }, parse.GetValue(batch), resume: false, parse.GetValue(negative)!,
                done => Console.WriteLine($"{done}/{jobs.Count} images in {outDir}"), ct);
        });
        return command;
    }
}
