using System.CommandLine;
using System.Globalization;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Recipes;
using HyperSd.Services.Jobs;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd jobs submit|list|show|cancel|resume|download</c>: bulk generation jobs against the embedded store
/// (where submit and resume run the job in this process) or a deployment (--postgres and --rabbitmq).</summary>
public static class JobsCommand
{
    public static Command Create()
    {
        var command = new Command("jobs", "bulk prompt-to-image generation jobs: submit, list, show, cancel, resume, download");
        command.Subcommands.Add(Submit());
        command.Subcommands.Add(List());
        command.Subcommands.Add(Show());
        command.Subcommands.Add(Cancel());
        command.Subcommands.Add(Resume());
        command.Subcommands.Add(Download());
        return command;
    }

    static Argument<Guid> JobId() => new("job-id") { Description = "the job's id" };

    static readonly Option<DirectoryInfo?> OutOption = new("--out", "-o")
    {
        Description = "when the job has ended: copy its images here with manifest.jsonl (prompt, indices, seed, file, sha256; " +
                      "with a reward, scores)"
    };

    static Command Submit()
    {
        var model = new Option<string>("--model") { Description = "toy, a diffusers folder or a single-file SD1.x .safetensors",
            Required = true };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "CLIP tokenizer folder (single-file checkpoints)" };
        var loras = new Option<string[]>("--lora") { Description = "a LoRA .safetensors, optionally with :scale (repeat for several)" };
        var runLoras = new Option<string[]>("--run-lora")
        {
            Description = "a run's LoRA: RUN[:STEPS[:SCALE]], RUN its id or name (the newest of that name), STEPS the step count " +
                          "of its fixed-step LoRA (default: its last), SCALE default 1 (repeat for several)"
        };
        var prompts = new Option<string[]>("--prompt", "-p") { Description = "a prompt (repeat for several)" };
        var promptsFile = new Option<FileInfo?>("--prompts-file")
        {
            Description = ".txt (one prompt a line; blank lines skipped), .json (a list), .jsonl or .csv (columns prompt, " +
                          "negative_prompt, seed, count)"
        };
        var perPrompt = new Option<int>("--images-per-prompt") { DefaultValueFactory = _ => 1 };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 4 };
        var sampler = new Option<string>("--sampler") { Description = "ddim-trailing, tcd, lcm or euler",
            DefaultValueFactory = _ => "ddim-trailing" };
        var eta = new Option<double>("--eta") { Description = "TCD's gamma", DefaultValueFactory = _ => 0.3 };
        var guidance = new Option<double>("--guidance") { Description = "CFG scale; ≤ 1 turns guidance off",
            DefaultValueFactory = _ => 1.0 };
        var size = new Option<int>("--size") { Description = "height and width", DefaultValueFactory = _ => 512 };
        var batch = new Option<int>("--batch-size") { Description = "images per forward pass", DefaultValueFactory = _ => 4 };
        var seed = new Option<long>("--seed") { Description = "base seed: image n of the job has seed + n", DefaultValueFactory = _ => 0 };
        var perRow = new Option<bool>("--seed-per-row") { Description = "image i of a row has the row's seed + i (every row gives one)" };
        var chunk = new Option<int>("--chunk-size") { Description = "images per chunk (the unit a worker leases)",
            DefaultValueFactory = _ => 16 };
        var name = new Option<string?>("--name") { Description = "the job's name and image folder (default: generated)" };
        var maxSide = new Option<int>("--max-image-side") { Description = "the largest height or width accepted",
            DefaultValueFactory = _ => 2048 };
        var wait = new Option<bool>("--wait") { Description = "follow the job to its end (always, on the embedded store)" };
        var bestOf = new Option<int>("--best-of")
        {
            Description = "candidates per image, of which the one --reward scores highest is kept (1: off)", DefaultValueFactory = _ => 1,
        };
        var reward = new Option<string?>("--reward")
        {
            Description = "the reward that scores the images (reward-scorer role): toy-structure or toy-structure-logp for --model toy; " +
                          "laion-aesthetic (--reward-clip, --reward-aesthetic-predictor) or pickscore (--reward-pickscore)"
        };
        var score = new Option<bool>("--score") { Description = "score every image with --reward without --best-of" };
        var rewardClip = new Option<string?>("--reward-clip") { Description = "CLIP ViT-L/14 folder the LAION aesthetic predictor reads" };
        var rewardAesthetic = new Option<string?>("--reward-aesthetic-predictor")
        {
            Description = "the LAION aesthetic predictor's .safetensors",
        };
        var rewardPickscore = new Option<string?>("--reward-pickscore") { Description = "PickScore CLIPModel folder" };
        var command = RunsCommand.WithStore("submit", "submit a generation job; on the embedded store it runs here to its end",
            model, tokenizer, loras, runLoras, prompts, promptsFile, perPrompt, steps, sampler, eta, guidance, size, batch, seed, perRow,
            chunk, name, maxSide, bestOf, reward, score, rewardClip, rewardAesthetic, rewardPickscore, wait, OutOption,
            RunCommand.VerboseOption);
        command.SetAction(async (parse, ct) =>
        {
            var store = RunStore.From(parse);
            var inputs = store.Options([]).Inputs;
            var rows = (parse.GetValue(prompts) ?? []).Select((p, i) => new PromptRow(p, Line: $"--prompt #{i + 1}")).ToList();
            if (parse.GetValue(promptsFile) is { } file) rows.AddRange(PromptFiles.Read(file.FullName, inputs));
            if (rows.Count == 0) throw new ArgumentException("no prompts: give --prompt or --prompts-file");
            int px = parse.GetValue(size);
            var spec = new GenerationJobSpec
            {
                Name = parse.GetValue(name), Model = parse.GetValue(model)!, Tokenizer = parse.GetValue(tokenizer),
                Loras = [.. (parse.GetValue(loras) ?? []).Select(Lora), .. (parse.GetValue(runLoras) ?? []).Select(RunLora)],
                Prompts = rows, ImagesPerPrompt = parse.GetValue(perPrompt),
                Steps = parse.GetValue(steps), Sampler = Sampler(parse.GetValue(sampler)!), Eta = parse.GetValue(eta),
                Guidance = parse.GetValue(guidance), Width = px, Height = px, BatchSize = parse.GetValue(batch),
                Seed = parse.GetValue(seed),
                SeedPolicy = parse.GetValue(perRow) ? SeedPolicy.PerRow : SeedPolicy.BasePlusIndex, ChunkSize = parse.GetValue(chunk),
                BestOf = parse.GetValue(bestOf), Reward = parse.GetValue(reward), Score = parse.GetValue(score),
                RewardFiles = new[] { rewardClip, rewardAesthetic, rewardPickscore }.Any(o => parse.GetValue(o) is not null)
                    ? new RewardsRecipe
                    {
                        Clip = parse.GetValue(rewardClip), AestheticPredictor = parse.GetValue(rewardAesthetic),
                        Pickscore = parse.GetValue(rewardPickscore),
                    }
                    : null,
            };
            // validated before any host starts: a bad job is reported alone, and nothing is stored
            await using (var db = await store.OpenAsync())
                spec = await RunLoras.ResolveAsync(spec, db, new FileSystemArtifactStore(store.Options([]).ArtifactRoot), ct);
            var plan = GenerationJobPlanner.Plan(spec, new GenerationLimits(MaxImageSide: parse.GetValue(maxSide)), inputs);
            foreach (var warning in plan.Warnings) Console.Error.WriteLine($"warning: {warning}");
            using var host = store.StartHost(allRoles: store.Embedded, parse.GetValue(RunCommand.VerboseOption));
            var jobs = host.Services.GetRequiredService<GenerationJobs>();
            var id = await jobs.SubmitAsync(plan, ct);
            var candidates = spec.BestOf > 1 ? $" ({plan.Candidates.Count} candidates, the best of {spec.BestOf} by {spec.Reward} kept)"
                : spec.Score ? $" (scored by {spec.Reward})" : "";
            Console.WriteLine($"job {id} ({plan.Name}): {plan.Images.Count} images{candidates} in {plan.Chunks.Count} chunks");
            if (!store.Embedded && !parse.GetValue(wait)) return 0;
            return await FollowAsync(host, jobs, id, parse.GetValue(OutOption), ct);
        });
        return command;
    }

    internal static JobLora Lora(string spec)
    {
        int colon = spec.LastIndexOf(':');
        return colon > 0 && double.TryParse(spec[(colon + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var scale)
            ? new JobLora(Path.GetFullPath(spec[..colon]), scale)
            : new JobLora(Path.GetFullPath(spec));
    }

    internal static JobLora RunLora(string spec)
    {
        var parts = spec.Split(':');
        int? steps = parts.Length > 1 ? int.TryParse(parts[1], CultureInfo.InvariantCulture, out var n) ? n
            : throw new ArgumentException($"--run-lora '{spec}': steps '{parts[1]}' is not an integer") : null;
        double scale = parts.Length > 2 ? double.TryParse(parts[2], NumberStyles.Float, CultureInfo.InvariantCulture, out var x) ? x
            : throw new ArgumentException($"--run-lora '{spec}': scale '{parts[2]}' is not a number") : 1.0;
        if (parts.Length > 3) throw new ArgumentException($"--run-lora '{spec}': expected RUN[:STEPS[:SCALE]]");
        return new JobLora(Scale: scale, Run: parts[0], Steps: steps);
    }

    static JobSampler Sampler(string name) => name switch
    {
        "ddim-trailing" => JobSampler.DdimTrailing,
        "tcd" => JobSampler.Tcd,
        "lcm" => JobSampler.Lcm,
        "euler" => JobSampler.Euler,
        _ => throw new ArgumentException($"--sampler '{name}': expected ddim-trailing, tcd, lcm or euler"),
    };

    /// <summary>Prints the job's progress until it ends, then (with --out) copies its results. On Ctrl+C the job is
    /// cancelled (resume it with <c>hypersd jobs resume</c>). Exit code 0 only if it succeeded.</summary>
    static async Task<int> FollowAsync(IHost host, GenerationJobs jobs, Guid id, DirectoryInfo? output, CancellationToken ct)
    {
        GenerationJobStatus status;
        try
        {
            while (true)
            {
                status = await jobs.ShowAsync(id, ct) ?? throw new ArgumentException($"no job {id} in the store");
                Console.Error.Write($"\r{Progress(status)}   ");
                if (status.State is RunState.Succeeded or RunState.Failed or RunState.Cancelled) break;
                await Task.Delay(500, ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            await jobs.CancelAsync(id, CancellationToken.None);
            Console.Error.WriteLine($"\nhypersd: job {id} interrupted and cancelled; continue it with: hypersd jobs resume {id}");
            await host.StopAsync(CancellationToken.None);
            return 130;
        }
        Console.Error.WriteLine();
        await host.StopAsync(CancellationToken.None);
        Console.WriteLine($"job {id}: {status.State.ToString().ToLowerInvariant()}{(status.Error is { } e ? $": {e}" : "")}");
        if (output is not null)
        {
            int n = await jobs.DownloadAsync(id, output.FullName, CancellationToken.None);
            Console.WriteLine($"{n} images and manifest.jsonl in {output.FullName}");
        }
        return status.State == RunState.Succeeded ? 0 : 1;
    }

    static string Progress(GenerationJobStatus s) =>
        $"{s.Name}: {s.State.ToString().ToLowerInvariant()}, {s.ImagesDone}/{s.ImageCount} images, {s.ChunksDone}/{s.ChunkCount} chunks" +
        (s.BestOf > 1 ? $", {s.CandidatesDone}/{s.CandidateCount} candidates (best of {s.BestOf})" : "") +
        (s.ImagesScored is { } scored ? $", {scored}/{s.CandidateCount} scored ({s.Reward})" : "") +
        (s.ImagesPerSecond is { } r ? $", {r.ToString("F2", CultureInfo.InvariantCulture)} images/s" : "") +
        (s.Eta is { } eta ? $", ETA {eta:hh\\:mm\\:ss}" : "");

    static async Task<T> WithJobsAsync<T>(ParseResult parse, bool allRoles, Func<IHost, GenerationJobs, Task<T>> action)
    {
        var store = RunStore.From(parse);
        await using (await store.OpenAsync()) { }
        using var host = store.StartHost(allRoles: allRoles && store.Embedded, verbose: false);
        return await action(host, host.Services.GetRequiredService<GenerationJobs>());
    }

    static Command List()
    {
        var command = RunsCommand.WithStore("list", "the jobs, newest first, with their progress");
        command.SetAction(async (parse, ct) => await WithJobsAsync(parse, false, async (host, jobs) =>
        {
            Console.WriteLine($"{"id",-36}  {"name",-24}  {"state",-9}  {"images",-13}  created");
            foreach (var s in await jobs.ListAsync(ct))
                Console.WriteLine($"{s.Id,-36}  {s.Name,-24}  {s.State.ToString().ToLowerInvariant(),-9}  " +
                                  $"{$"{s.ImagesDone}/{s.ImageCount}",-13}  {s.CreatedAt.ToLocalTime():yyyy-MM-dd HH:mm:ss}");
            await host.StopAsync(CancellationToken.None);
            return 0;
        }));
        return command;
    }

    static Command Show()
    {
        var id = JobId();
        var command = RunsCommand.WithStore("show",
            "a job's progress: images done of the total, images/s, ETA (its chunks: hypersd runs show RUN)", id);
        command.SetAction(async (parse, ct) => await WithJobsAsync(parse, false, async (host, jobs) =>
        {
            var s = await jobs.ShowAsync(parse.GetValue(id), ct) ?? throw new ArgumentException(
                $"no job {parse.GetValue(id)} in the store");
            Console.WriteLine($"job {s.Id} (run {s.RunId}), model {s.Model}, images in {s.OutputPath}");
            Console.WriteLine(Progress(s));
            if (s.Error is { } error) Console.WriteLine($"error: {error}");
            await host.StopAsync(CancellationToken.None);
            return 0;
        }));
        return command;
    }

    static Command Cancel()
    {
        var id = JobId();
        var command = RunsCommand.WithStore("cancel", "cancel a job (its chunks stop at their next heartbeat; what is done stays)", id);
        command.SetAction(async (parse, ct) => await WithJobsAsync(parse, false, async (host, jobs) =>
        {
            var state = await jobs.CancelAsync(parse.GetValue(id), ct) ?? throw new ArgumentException(
                $"no job {parse.GetValue(id)} in the store");
            Console.WriteLine($"job {parse.GetValue(id)}: {state.ToString().ToLowerInvariant()}");
            await host.StopAsync(CancellationToken.None);
            return 0;
        }));
        return command;
    }

    static Command Resume()
    {
        var id = JobId();
        var wait = new Option<bool>("--wait") { Description = "follow the job to its end (always, on the embedded store)" };
        var command = RunsCommand.WithStore("resume",
            "resume a cancelled or failed job: its unfinished chunks skip what is recorded (embedded: runs it here)",
            id, wait, OutOption);
        command.SetAction(async (parse, ct) => await WithJobsAsync(parse, true, async (host, jobs) =>
        {
            var jobId = parse.GetValue(id);
            var state = await jobs.ResumeAsync(jobId, ct) ?? throw new ArgumentException($"no job {jobId} in the store");
            Console.WriteLine($"job {jobId}: {state.ToString().ToLowerInvariant()}");
            if (!RunStore.From(parse).Embedded && !parse.GetValue(wait))
            {
                await host.StopAsync(CancellationToken.None);
                return 0;
            }
            return await FollowAsync(host, jobs, jobId, parse.GetValue(OutOption), ct);
        }));
        return command;
    }

    static Command Download()
    {
        var id = JobId();
        var output = new Option<FileInfo>("--out", "-o") { Description = "a folder, or a .zip file", Required = true };
        var command = RunsCommand.WithStore("download", "a job's images with manifest.jsonl, into a folder or a zip", id, output);
        command.SetAction(async (parse, ct) => await WithJobsAsync(parse, false, async (host, jobs) =>
        {
            var target = parse.GetValue(output)!.FullName;
            if (target.EndsWith(".zip", StringComparison.OrdinalIgnoreCase))
            {
                var tmp = target + ".tmp";
                await using (var file = File.Create(tmp))
                    await jobs.WriteZipAsync(parse.GetValue(id), file, ct);
                File.Move(tmp, target, overwrite: true);
                Console.WriteLine(target);
            }
            else
                Console.WriteLine($"{await jobs.DownloadAsync(parse.GetValue(id), target, ct)} images and manifest.jsonl in {target}");
            await host.StopAsync(CancellationToken.None);
            return 0;
        }));
        return command;
    }
}
