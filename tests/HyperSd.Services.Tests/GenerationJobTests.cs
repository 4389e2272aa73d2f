using System.IO.Compression;
using System.Text;
using System.Text.Json;
using HyperSd.Contracts;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Services.Jobs;
using HyperSd.Services.Runs;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.Stages;
using HyperSd.Testing;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace HyperSd.Services.Tests;

/// <summary>Generation jobs: prompts files, validation, and whole jobs on the embedded default (in-memory bus, SQLite).</summary>
[Collection(nameof(TorchGlobalState))]
public sealed class GenerationJobTests : IDisposable
{
    readonly TestStore store = new();
    static readonly InputRoots Roots = TestInputs.Temp;

    public void Dispose() => store.Dispose();

    string Write(string name, string text) => WriteBytes(name, Encoding.UTF8.GetBytes(text));

    string WriteBytes(string name, byte[] bytes)
    {
        var path = Path.Combine(store.Root, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    static GenerationJobSpec Spec(IReadOnlyList<PromptRow> prompts) => new()
    {
        Model = "toy", Prompts = prompts, Width = 32, Height = 32, Steps = 2, ImagesPerPrompt = 2, BatchSize = 2, ChunkSize = 3, Seed = 100,
    };

    [Fact]
    public void Prompts_files_of_every_type_give_rows_and_skip_blank_lines()
    {
        Assert.Equal(["a", "b"], PromptFiles.Read(Write("p.txt", "a\n\n  \nb\r\n"), Roots).Select(r => r.Prompt));
        Assert.Equal("p.txt:4", PromptFiles.Read(Write("p.txt", "a\n\n  \nb\r\n"), Roots)[1].Line);
        var csv = PromptFiles.Read(Write("p.csv", "prompt,negative_prompt,seed,count\n\"a, \"\"quoted\"\"\nprompt\",blurry,7,3\n\nb,,,\n"), Roots);
        Assert.Equal(new PromptRow("a, \"quoted\"\nprompt", "blurry", 7, 3, "p.csv:2"), csv[0]);
        Assert.Equal(new PromptRow("b", null, null, null, "p.csv:5"), csv[1]);
        var jsonl = PromptFiles.Read(Write("p.jsonl", "{\"prompt\":\"a\",\"seed\":5}\n\n{\"prompt\":\"b\",\"negative_prompt\":\"n\",\"count\":2}\n"), Roots);
        Assert.Equal([new PromptRow("a", null, 5, null, "p.jsonl:1"), new PromptRow("b", "n", null, 2, "p.jsonl:3")], jsonl);
        Assert.Equal(["a", "b"], PromptFiles.Read(Write("p.json", "[\"a\", {\"prompt\": \"b\"}]"), Roots).Select(r => r.Prompt));
    }

    [Theory]
    [InlineData("bad.csv", "prompt,seed\n\"a,1\nb,2\n", "bad.csv:2: a quoted field is never closed")]
    [InlineData("bad.csv", "prompt,seed\na \"b\",1\n", "bad.csv:2: a quote inside an unquoted field")]
    [InlineData("bad.csv", "prompt,seed\n\"a\"x,1\n", "bad.csv:2: text after a closing quote")]
    [InlineData("bad.csv", "prompt,seed\na,1,2\n", "bad.csv:2: 3 fields, the header has 2")]
    [InlineData("bad.csv", "prompt,seed\na,x\n", "bad.csv:2: seed: 'x' is not an integer")]
    [InlineData("bad.csv", "text\na\n", "bad.csv:1: unknown column 'text'")]
    [InlineData("bad.csv", "prompt,seed\n ,1\n", "bad.csv:2: prompt: empty")]
    [InlineData("bad.jsonl", "{\"prompt\":\"a\"}\n{\"prompt\":\n", "bad.jsonl:2: not valid JSON")]
    [InlineData("bad.jsonl", "{\"prompt\":\"a\",\"sead\":1}\n", "bad.jsonl:1:")]
    [InlineData("bad.json", "{\"prompt\":\"a\"}", "bad.json: expected a JSON list")]
    [InlineData("bad.txt", "\n \n", "bad.txt: no prompts")]
    [InlineData("bad.yaml", "a", "bad.yaml: unknown prompts file type '.yaml'")]
    public void A_malformed_prompts_file_is_an_error_naming_file_and_line(string name, string text, string expected) =>
        Assert.StartsWith(expected, Assert.Throws<PromptFileException>(() => PromptFiles.Read(Write(name, text), Roots)).Message);

    [Fact]
    public void Invalid_utf8_is_an_error_naming_line_and_column()
    {
        var path = WriteBytes("latin1.txt", [.. "a red circle\nun carr"u8.ToArray(), 0xE9, .. "\n"u8.ToArray()]);
        Assert.Equal("latin1.txt:2: not valid UTF-8 (byte 0xE9 at column 8); save the file as UTF-8",
            Assert.Throws<PromptFileException>(() => PromptFiles.Read(path, Roots)).Message);
    }

    [Fact]
    public void Plans_seeds_by_policy_and_chunks_of_the_chunk_size()
    {
        var plan = GenerationJobPlanner.Plan(Spec([new("a"), new("b", "n", Count: 3)]), new GenerationLimits(), Roots);
        Assert.Equal([(0, 0, 100L), (0, 1, 101L), (1, 0, 102L), (1, 1, 103L), (1, 2, 104L)],
            plan.Images.Select(i => (i.PromptIndex, i.ImageIndex, i.Seed)));
        Assert.Equal([3, 2], plan.Chunks.Select(c => c.Length));
        Assert.Equal(("toy", true), (plan.Model.Id, plan.Model.Sha256!.Length == 64));
        var perRow = GenerationJobPlanner.Plan(Spec([new("a", Seed: 7), new("b", Seed: 70)]) with { SeedPolicy = SeedPolicy.PerRow },
            new GenerationLimits(), Roots);
        Assert.Equal([7L, 8L, 70L, 71L], perRow.Images.Select(i => i.Seed));
    }

    [Fact]
    public void Every_problem_of_a_bad_job_is_reported_by_field_or_line()
    {
        var spec = Spec([new("a", Count: 0, Line: "p.csv:2"), new("b", Count: 1, Line: "p.csv:3"), new(" ", Count: 1, Line: "p.csv:4")]) with
        {
            Name = "../escape", Model = Path.Combine(store.Root, "no-such-model"), Loras = [new(Path.Combine(store.Root, "none.safetensors"))],
            ImagesPerPrompt = -1, Width = 4096, SeedPolicy = SeedPolicy.PerRow, BatchSize = 0,
        };
        var problems = Assert.Throws<JobValidationException>(() => GenerationJobPlanner.Plan(spec, new GenerationLimits(MaxImageSide: 1024), Roots))
            .Problems.Select(p => p.ToString()).ToList();
        Assert.Contains(problems, p => p.StartsWith("name: '../escape' is not a folder name"));
        Assert.Contains(problems, p => p.StartsWith("model: no such file or folder"));
        Assert.Contains(problems, p => p.StartsWith("loras[0]: no such file or folder"));
        Assert.Contains("images_per_prompt: must be at least 1, got -1", problems);
        Assert.Contains("batch_size: must be at least 1, got 0", problems);
        Assert.Contains("width: must be a multiple of 8 from 8 to 1024 (this deployment's limit), got 4096", problems);
        Assert.Contains("p.csv:2: count: must be at least 1, got 0", problems);
        Assert.Contains("p.csv:3: seed: required by the per-row seed policy", problems);
        Assert.Contains("p.csv:4: prompt: empty", problems);
    }

    [Fact]
    public void A_lora_for_another_base_is_refused_and_a_long_prompt_is_truncated_with_a_warning()
    {
        // a LoRA made for a UNet of another shape (another base model)
        var config = Diffusion.IO.ModelConfig.Read<UNet2DConditionConfig>(
            Path.Combine(Distillation.Toy.ToyWorld.PretrainedTeacherDir, "unet", "config.json"));
        using (var other = new UNet2DConditionModel(config with { BlockOutChannels = [.. config.BlockOutChannels.Select(c => c * 2)] }))
        using (var lora = LoraAdapter.Create(other, new LoraConfig(2, 2)))
            LoraFormats.Save(lora, Path.Combine(store.Root, "other.safetensors"), LoraFileFormat.Kohya);
        var problem = Assert.Single(Assert.Throws<JobValidationException>(() => GenerationJobPlanner.Plan(
            Spec([new("a")]) with { Loras = [new(Path.Combine(store.Root, "other.safetensors"))] }, new GenerationLimits(), Roots)).Problems);
        Assert.StartsWith("loras[0]: ", problem.ToString());
        Assert.Contains("does not fit this model's UNet: ", problem.Message);
        Assert.EndsWith("(a LoRA for another base model?)", problem.Message);

        var plan = GenerationJobPlanner.Plan(Spec([new(string.Join(' ', Enumerable.Repeat("red circle", 50)), Line: "p.txt:1")]),
            new GenerationLimits(), Roots);
        Assert.StartsWith("p.txt:1: prompt: 100 tokens; the text encoder reads 77 with its start and end tokens, so it is truncated",
            Assert.Single(plan.Warnings));
    }

    /// <summary>A run named <paramref name="name"/> whose TSCD stages made LoRAs for 8 and 4 steps (files that fit the toy
    /// UNet), as the store records them; with <paramref name="unified"/> also a merge stage's unified LoRA (PEFT file only).</summary>
    async Task StoreRunWithLorasAsync(string name, bool unified = false)
    {
        var config = Diffusion.IO.ModelConfig.Read<UNet2DConditionConfig>(
            Path.Combine(Distillation.Toy.ToyWorld.PretrainedTeacherDir, "unet", "config.json"));
        await using var db = store.CreateDbContext();
        var recipe = new StoredRecipe { Id = Guid.NewGuid(), Name = name, Yaml = "", Sha256 = "", CreatedAt = DateTimeOffset.UtcNow };
        var run = new Run { Id = Guid.NewGuid(), RecipeId = recipe.Id, Name = name, BaseModel = "toy", State = RunState.Succeeded,
            CreatedAt = DateTimeOffset.UtcNow };
        db.Recipes.Add(recipe);
        db.Runs.Add(run);
        using var unet = new UNet2DConditionModel(config);
        foreach (var k in new[] { 8, 4 })
        {
            var path = $"runs/{run.Id}/{SegmentConsistency.TrainSegmentStage.StageName(k)}/final";
            Directory.CreateDirectory(store.Artifacts.GetFullPath(path));
            using (var lora = LoraAdapter.Create(unet, new LoraConfig(2, 2)))
                LoraFormats.Save(lora, Path.Combine(store.Artifacts.GetFullPath(path), "lora.safetensors"), LoraFileFormat.Kohya);
            db.Artifacts.Add(new Artifact
            {
                Id = Guid.NewGuid(), Kind = ArtifactKind.Lora, Path = path, Sha256 = $"{k}", RunId = run.Id,
                StageKind = SegmentConsistency.TrainSegmentStage.Kind, Segments = k, Steps = k, CreatedAt = DateTimeOffset.UtcNow.AddSeconds(-k),
            });
        }
        if (unified)
        {
            var path = $"runs/{run.Id}/{LoraMerger.MergeLorasStage.StageName}/lora";
            Directory.CreateDirectory(store.Artifacts.GetFullPath(path));
            using (var lora = LoraAdapter.Create(unet, new LoraConfig(2, 2)))
                LoraFormats.Save(lora, Path.Combine(store.Artifacts.GetFullPath(path), LoraMerger.MergeLorasStage.PeftFile), LoraFileFormat.Peft);
            db.Artifacts.Add(new Artifact
            {
                Id = Guid.NewGuid(), Kind = ArtifactKind.Lora, Path = path, Sha256 = "u", RunId = run.Id,
                StageKind = LoraMerger.MergeLorasStage.Kind, CreatedAt = DateTimeOffset.UtcNow.AddSeconds(-1),
            });
        }
        await db.SaveChangesAsync();
    }

    [Fact]
    public async Task A_runs_lora_without_steps_is_its_unified_lora_when_it_made_one()
    {
        await StoreRunWithLorasAsync("unified-run", unified: true);
        await using var db = store.CreateDbContext();
        Task<GenerationJobSpec> Resolve(JobLora lora) => RunLoras.ResolveAsync(Spec([new("a")]) with { Loras = [lora] }, db, store.Artifacts);
        var any = Assert.Single((await Resolve(new JobLora(Run: "unified-run"))).Loras);
        Assert.Equal(("unified-run/unified", null), (any.Id, any.Steps));
        Assert.Equal(LoraMerger.MergeLorasStage.PeftFile, Path.GetFileName(any.Path));
        Assert.True(File.Exists(any.Path), any.Path);
        // a step count still picks the fixed-step LoRA made for it
        Assert.Equal("unified-run/tscd-k4", Assert.Single((await Resolve(new JobLora(Run: "unified-run", Steps: 4))).Loras).Id);
    }

    [Fact]
    public async Task A_runs_lora_is_resolved_from_the_store_and_its_images_record_it_by_run_and_stage()
    {
        await StoreRunWithLorasAsync("distilled");
        await using (var db = store.CreateDbContext())
        {
            Task<GenerationJobSpec> Resolve(params JobLora[] loras) =>
                RunLoras.ResolveAsync(Spec([new("a")]) with { Loras = loras }, db, store.Artifacts);
            var four = Assert.Single((await Resolve(new JobLora(Run: "distilled", Steps: 4, Scale: 0.5))).Loras);
            Assert.Equal(("distilled/tscd-k4", 4, 0.5), (four.Id, four.Steps, four.Scale));
            Assert.True(File.Exists(four.Path), four.Path);
            // without steps: the run's last LoRA (k = 4, made after k = 8)
            Assert.Equal("distilled/tscd-k4", Assert.Single((await Resolve(new JobLora(Run: "distilled"))).Loras).Id);
            Assert.Equal("distilled/tscd-k8", Assert.Single((await Resolve(new JobLora(Run: "distilled", Steps: 8))).Loras).Id);

            async Task<string> Refused(JobLora lora) => (await Assert.ThrowsAsync<InvalidFieldException>(() => Resolve(lora))).Message;
            Assert.Equal("loras[0].run: no run 'nope' in the store", await Refused(new JobLora(Run: "nope")));
            Assert.Equal("loras[0].steps: run 'distilled' has no LoRA for 2 steps; it has LoRAs for 8, 4 steps",
                await Refused(new JobLora(Run: "distilled", Steps: 2)));
            Assert.StartsWith("loras[0]: give exactly one of path", await Refused(new JobLora(Path: "x.safetensors", Run: "distilled")));
        }

        using var host = StartHost();
        var jobs = host.Services.GetRequiredService<GenerationJobs>();
        var spec = await jobs.ResolveAsync(Spec([new("a red circle")]) with { Name = "with-run-lora", Loras = [new(Run: "distilled", Steps: 4)] });
        var id = await jobs.SubmitAsync(GenerationJobPlanner.Plan(spec, new GenerationLimits(), Roots));
        var status = await WaitForEndAsync(jobs, id);
        Assert.True(status.State == RunState.Succeeded, $"{status.State}: {status.Error}");
        await using var check = store.CreateDbContext();
        foreach (var image in await check.GeneratedImages.Where(i => i.JobId == id).ToListAsync())
        {
            var lora = Assert.Single(GenerationParameters.FromPngText(ImageFiles.ReadPngText(store.Artifacts.GetFullPath(image.Path))).Loras);
            Assert.Equal(("distilled/tscd-k4", 1.0), (lora.Id, lora.Scale));
            Assert.NotNull(lora.Sha256);
        }
        await host.StopAsync();
    }

    [Fact]
    public async Task A_killed_attempts_partial_files_are_removed_when_its_chunk_is_redone()
    {
        // what a generator SIGKILLed mid-write leaves: a partial PNG in the chunk's temporary folder
        var dir = store.Artifacts.GetFullPath(GenerationJobs.OutputPathOf("after-kill"));
        var partial = Path.Combine(dir, $".{GenerateChunkStage.StageName(0)}.tmp", "00000-0000.png.tmp");
        Directory.CreateDirectory(Path.GetDirectoryName(partial)!);
        File.WriteAllBytes(partial, [0x89, 0x50]);
        using var host = StartHost();
        var jobs = host.Services.GetRequiredService<GenerationJobs>();
        var plan = GenerationJobPlanner.Plan(Spec([new("a red circle"), new("a blue square")]) with { Name = "after-kill" },
            new GenerationLimits(), Roots);
        var status = await WaitForEndAsync(jobs, await jobs.SubmitAsync(plan));
        Assert.True(status.State == RunState.Succeeded, $"{status.State}: {status.Error}");
        Assert.Equal(plan.Images.Select(i => i.File).Order(), Directory.GetFileSystemEntries(dir).Select(Path.GetFileName).Order());
        await host.StopAsync();
    }

    /// <summary>A redone chunk makes the bytes a clean run makes when a killed attempt left part of a batch's files in
    /// place: the batch is made whole again (its size changes the model's float results in the last bits). Before that,
    /// the missing images were made as a smaller batch, and with one or two files in place this plan's image 00003-0000
    /// came out with other bytes (seen first in the integration test with three generators, one killed).</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task A_batch_redone_after_a_kill_gives_the_bytes_of_a_clean_run(int inPlace)
    {
        using var host = StartHost();
        var jobs = host.Services.GetRequiredService<GenerationJobs>();
        GenerationJobPlan Plan(string name) => GenerationJobPlanner.Plan(new GenerationJobSpec
        {
            Name = name, Model = "toy", Prompts = [.. Enumerable.Range(0, 4).Select(i => new PromptRow($"a red circle at position {i}"))],
            ImagesPerPrompt = 5, Steps = 4, Width = 16, Height = 16, BatchSize = 4, ChunkSize = 8, Seed = 1000,
        }, new GenerationLimits(), Roots);
        var clean = Plan("clean");
        var status = await WaitForEndAsync(jobs, await jobs.SubmitAsync(clean));
        Assert.True(status.State == RunState.Succeeded, $"{status.State}: {status.Error}");
        var cleanDir = store.Artifacts.GetFullPath(GenerationJobs.OutputPathOf("clean"));

        // a killed attempt moved the first files of the batch of images 12-15 into place, not the rest
        var redone = Plan("redone");
        var redoneDir = store.Artifacts.GetFullPath(GenerationJobs.OutputPathOf("redone"));
        Directory.CreateDirectory(redoneDir);
        foreach (var file in redone.Images.Skip(12).Take(inPlace).Select(i => i.File))
            File.Copy(Path.Combine(cleanDir, file), Path.Combine(redoneDir, file));
        status = await WaitForEndAsync(jobs, await jobs.SubmitAsync(redone));
        Assert.True(status.State == RunState.Succeeded, $"{status.State}: {status.Error}");
        Assert.Equal("00003-0000.png", redone.Images[15].File);
        foreach (var image in clean.Images)
            Assert.True(File.ReadAllBytes(Path.Combine(cleanDir, image.File)).AsSpan()
                .SequenceEqual(File.ReadAllBytes(Path.Combine(redoneDir, image.File))), $"{image.File} differs");
        await host.StopAsync();
    }

    IHost StartHost() => TestHosts.Start(store.WorkerOptions(o =>
    {
        o.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
        o.ReconcileInterval = TimeSpan.FromSeconds(1);
        o.Devices = ["cpu", "cpu"];
    }), StageCatalogue.Default());

    async Task<GenerationJobStatus> WaitForEndAsync(GenerationJobs jobs, Guid id)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
        while (true)
        {
            var status = (await jobs.ShowAsync(id))!;
            if (status.State is RunState.Succeeded or RunState.Failed or RunState.Cancelled) return status;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"job still {status.State}: {status.ImagesDone}/{status.ImageCount}");
            await Task.Delay(200);
        }
    }

    [Fact]
    public async Task A_job_makes_each_image_once_with_its_seed_and_a_duplicate_chunk_command_adds_nothing()
    {
        using var host = StartHost();
        var jobs = host.Services.GetRequiredService<GenerationJobs>();
        var rows = PromptFiles.Read(Write("p.csv", "prompt,negative_prompt,count\na red circle,,\na blue square,blurry,3\na green triangle,,1\n"), Roots);
        var plan = GenerationJobPlanner.Plan(Spec(rows) with { Name = "shapes" }, new GenerationLimits(), Roots);
        var id = await jobs.SubmitAsync(plan);
        var status = await WaitForEndAsync(jobs, id);
        Assert.True(status.State == RunState.Succeeded, $"{status.State}: {status.Error}");
        Assert.Equal((6, 6, 2, 2), (status.ImagesDone, status.ImageCount, status.ChunksDone, status.ChunkCount));
        Assert.True(status.ImagesPerSecond > 0);

        // the same chunk command again (a redelivery): its attempt is no longer the dispatched one, so nothing is redone
        var command = await host.Services.GetRequiredService<RunLifecycle>().CurrentCommandAsync(status.RunId, GenerateChunkStage.StageName(0));
        await (await host.Services.GetRequiredService<ISendEndpointProvider>().GetSendEndpoint(
            host.Services.GetRequiredService<Hosting.RoleQueues>().Address(Roles.Generator))).Send(command);
        await Task.Delay(1500);

        await using var db = store.CreateDbContext();
        var images = await db.GeneratedImages.Where(i => i.JobId == id).OrderBy(i => i.PromptIndex).ThenBy(i => i.ImageIndex).ToListAsync();
        Assert.Equal([(0, 0, 100L), (0, 1, 101L), (1, 0, 102L), (1, 1, 103L), (1, 2, 104L), (2, 0, 105L)],
            images.Select(i => (i.PromptIndex, i.ImageIndex, i.Seed)));
        var dir = store.Artifacts.GetFullPath(GenerationJobs.OutputPathOf("shapes"));
        Assert.Equal(images.Select(i => Path.GetFileName(i.Path)), Directory.GetFiles(dir).Select(Path.GetFileName).Order());
        foreach (var image in images)
        {
            var path = store.Artifacts.GetFullPath(image.Path);
            Assert.Equal(await ContentHash.OfFileAsync(path), image.Sha256);
            var p = GenerationParameters.FromPngText(ImageFiles.ReadPngText(path));
            Assert.Equal((image.Prompt, image.Seed, 32, 2), (p.Prompt, p.Seed, p.Width, p.Steps));
            Assert.Equal(image.PromptIndex == 1 ? "blurry" : "", p.NegativePrompt);
        }

        var manifest = new MemoryStream();
        await jobs.WriteManifestAsync(id, manifest);
        var lines = Encoding.UTF8.GetString(manifest.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonSerializer.Deserialize<ManifestLine>(l, GenerationJobs.Json)!).ToList();
        Assert.Equal(images.Select(i => new ManifestLine(i.Prompt, i.PromptIndex, i.ImageIndex, i.Seed, Path.GetFileName(i.Path), i.Sha256)),
            lines);
        var zipped = new MemoryStream();
        await jobs.WriteZipAsync(id, zipped);
        using var zip = new ZipArchive(new MemoryStream(zipped.ToArray()));
        Assert.Equal([.. lines.Select(l => l.File), "manifest.jsonl"], zip.Entries.Select(e => e.FullName));

        var again = Path.Combine(store.Root, "download");
        Assert.Equal(6, await jobs.DownloadAsync(id, again));
        Assert.Equal(File.ReadAllLines(Path.Combine(again, "manifest.jsonl")), Encoding.UTF8.GetString(manifest.ToArray()).Split('\n',
            StringSplitOptions.RemoveEmptyEntries));
        await host.StopAsync();
    }

    [Fact]
    public async Task A_cancelled_job_resumes_and_ends_with_every_image_once()
    {
        using var host = StartHost();
        var jobs = host.Services.GetRequiredService<GenerationJobs>();
        var plan = GenerationJobPlanner.Plan(Spec([.. Enumerable.Range(0, 64).Select(i => new PromptRow($"a red circle number {i}"))]) with
        {
            Name = "resumed", ChunkSize = 4, BatchSize = 1,
        }, new GenerationLimits(), Roots);
        var id = await jobs.SubmitAsync(plan);
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        while ((await jobs.ShowAsync(id))!.ImagesDone == 0 && DateTime.UtcNow < deadline) await Task.Delay(20);
        Assert.Equal(RunState.Cancelled, await jobs.CancelAsync(id));
        var cancelled = (await jobs.ShowAsync(id))!;
        Assert.True(cancelled.ImagesDone < cancelled.ImageCount, "the job ended before it was cancelled");
        // the cancelled chunks' workers stop at their next heartbeat
        await Task.Delay(1500);
        Assert.Equal(RunState.Running, await jobs.ResumeAsync(id));
        var status = await WaitForEndAsync(jobs, id);
        Assert.True(status.State == RunState.Succeeded, $"{status.State}: {status.Error}");
        await using var db = store.CreateDbContext();
        var images = await db.GeneratedImages.Where(i => i.JobId == id).ToListAsync();
        Assert.Equal(plan.Images.Select(i => (i.PromptIndex, i.ImageIndex, i.Seed)).Order(),
            images.Select(i => (i.PromptIndex, i.ImageIndex, i.Seed)).Order());
        Assert.Equal(plan.Images.Count, Directory.GetFiles(store.Artifacts.GetFullPath(GenerationJobs.OutputPathOf("resumed"))).Length);
        await host.StopAsync();
    }
}
