using HyperSd.Testing;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Toy;
using HyperSd.Services.DatasetPrep;
using HyperSd.Services.Hosting;
using HyperSd.Services.TeacherTrajectories;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace HyperSd.Services.Tests;

/// <summary>Whole runs through the in-memory transport and SQLite, every role in one host (the embedded default).</summary>
[Collection(nameof(TorchGlobalState))]
public sealed class EmbeddedRunTests : IDisposable
{
    readonly TestStore store = new();

    public void Dispose() => store.Dispose();

    IHost StartHost(WorkerOptions options)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o => { o.IncludeScopes = true; o.SingleLine = true; });
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        builder.Logging.AddFilter("Microsoft.EntityFrameworkCore", LogLevel.Warning);
        builder.Services.AddHyperSdWorkers(options);
        var host = builder.Build();
        host.Start();
        return host;
    }

    async Task<Run> WaitForEnd(Guid runId, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var run = await store.RunAsync(runId);
            if (run.State is RunState.Succeeded or RunState.Failed or RunState.Cancelled) return run;
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"run still {run.State} after {timeout}: " +
                                           string.Join(", ", run.Stages.Select(s => $"{s.Name} {s.State}#{s.Attempt} {s.Progress:P0}")));
            await Task.Delay(200);
        }
    }

    [Theory]
    [InlineData("sd15")]
    [InlineData("sdxl")]
    public async Task A_tiny_toy_recipe_runs_end_to_end(string architecture)
    {
        var (teacher, recognizer) = TinyToy.WriteModels(Path.Combine(store.Root, "models"), sdxl: architecture == "sdxl");
        var recipePath = Path.Combine(store.Root, "tiny.yaml");
        await File.WriteAllTextAsync(recipePath, TinyToy.Recipe(teacher, architecture: architecture));
        var options = store.WorkerOptions(o =>
        {
            o.ToyRecognizerDir = recognizer;
            o.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
            o.ReconcileInterval = TimeSpan.FromSeconds(1);
        });
        using var host = StartHost(options);
        var runId = await host.Services.GetRequiredService<RunSubmission>().SubmitAsync(recipePath);
        var run = await WaitForEnd(runId, TimeSpan.FromMinutes(3));
        await host.StopAsync();

        Assert.True(run.State == RunState.Succeeded,
            $"run {run.State}: {run.Error}\n" + string.Join("\n", run.Stages.Select(s => $"{s.Name} {s.State}#{s.Attempt}: {s.Error}")));
        Assert.All(run.Stages, s => Assert.Equal((StageState.Succeeded, 1), (s.State, s.Attempt)));
        Assert.All(run.Stages, s => Assert.True(s.StartedAt >= s.DispatchedAt && s.FinishedAt >= s.StartedAt, s.Name));

        await using var db = store.CreateDbContext();
        var artifacts = await db.Artifacts.Include(a => a.Inputs).Where(a => a.RunId == runId).ToListAsync();
        foreach (var artifact in artifacts)
            Assert.Equal(artifact.Sha256, (await store.Artifacts.DescribeAsync(artifact.Path)).Sha256);
        TinyToyRunAssertions.AssertOutputs(run, artifacts, await db.Datasets.SingleAsync(d => d.RunId == runId),
            await db.Evaluations.Where(v => v.RunId == runId).ToListAsync(), a => store.Artifacts.GetFullPath(a.Path));
        await AssertImagesRegenerateFromTheirText(artifacts.Single(a => a.StageKind == Generator.GenerateImagesStage.Kind));
        var stageIds = run.Stages.ToDictionary(s => s.Name, s => s.Id);
        var report = store.Artifacts.GetFullPath(artifacts.Single(a => a.Kind == ArtifactKind.Report && a.StageKind == "evaluate-model" && a.Path.EndsWith("results.md")).Path);
        Assert.Contains("| tscd-k1 |", await File.ReadAllTextAsync(report));
        Assert.Contains("| unified |", await File.ReadAllTextAsync(report));
        var attempts = await db.StageAttempts.Where(a => stageIds.Values.Contains(a.StageId)).ToListAsync();
        Assert.Equal(run.Stages.Count, attempts.Count);
        Assert.All(attempts, a => Assert.Equal(AttemptOutcome.Succeeded, a.Outcome));
    }

    /// <summary>The generate stage's images name the model and the stage's LoRA (file, sha256, scale) and the sampler
    /// with its spacing, so <c>hypersd generate --from-png</c> makes each again byte for byte.</summary>
    async Task AssertImagesRegenerateFromTheirText(Artifact images)
    {
        var dir = store.Artifacts.GetFullPath(images.Path);
        var again = Path.Combine(store.Root, "regenerated");
        foreach (var png in new[] { "00000.png", "00003.png" })
        {
            var p = GenerationParameters.FromPngText(ImageFiles.ReadPngText(Path.Combine(dir, png)));
            Assert.Equal(("DDIMScheduler", "trailing"), (p.Scheduler.Class, p.Scheduler.TimestepSpacing));
            var lora = Assert.Single(p.Loras);
            Assert.Equal(("tiny/unified", 1.0), (lora.Id, lora.Scale));
            Assert.Equal(await HyperSd.Data.Artifacts.ContentHash.OfFileAsync(lora.Path!), lora.Sha256);
            Assert.NotNull(p.Model.Sha256);
            var made = await HyperSd.Services.Generator.ImageModels.RegenerateAsync(Path.Combine(dir, png), again, CPU, ScalarType.Float32);
            Assert.Equal(await File.ReadAllBytesAsync(Path.Combine(dir, png)), await File.ReadAllBytesAsync(made));
        }
    }

    /// <summary>Without rewards.clip the evaluation is the grids only; with a (tiny random) CLIP folder it measures
    /// clip-score and fd-clip for every row against the dataset's decoded latents.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task An_sdxl_diffusers_model_on_an_image_folder_runs_end_to_end_with_image_grids_as_its_evaluation(bool clip)
    {
        var (teacher, _) = TinyToy.WriteModels(Path.Combine(store.Root, "models"), sdxl: true);
        var images = Path.Combine(store.Root, "images");
        Directory.CreateDirectory(images);
        var (pixels, scenes) = ToyShapes.Generate(10, 3);
        using (pixels)
            for (int i = 0; i < scenes.Count; i++)
            {
                ImageFiles.SavePng(pixels[i], Path.Combine(images, $"{i:D2}.png"));
                await File.WriteAllTextAsync(Path.Combine(images, $"{i:D2}.txt"), scenes[i].Caption);
            }
        await File.WriteAllTextAsync(Path.Combine(images, "broken.png"), "not an image");
        await File.WriteAllTextAsync(Path.Combine(images, "broken.txt"), "a caption");
        var prompts = Path.Combine(store.Root, "prompts.txt");
        await File.WriteAllLinesAsync(prompts, ["a red circle in the center", "a green triangle at the bottom right", "a blue square"]);
        var recipePath = Path.Combine(store.Root, "real.yaml");
        var clipDir = Path.Combine(store.Root, "models", "clip");
        if (clip)
            using (var embedder = HyperSd.Distillation.Tests.Evaluation.TinyClip.Embedder())
                HyperSd.Distillation.Tests.Evaluation.TinyClip.SaveFullModel(embedder, clipDir, logitScale: null);
        await File.WriteAllTextAsync(recipePath, TinyToy.Recipe(teacher, architecture: "sdxl", imageFolder: images, promptsFile: prompts)
            + (clip ? $"\nrewards:\n  clip: {clipDir}\n" : ""));
        using var host = StartHost(store.WorkerOptions(o => o.HeartbeatInterval = TimeSpan.FromMilliseconds(500)));
        var runId = await host.Services.GetRequiredService<RunSubmission>().SubmitAsync(recipePath);
        // the evaluation reads the prompts file's copy stored at submission, not the file
        File.Delete(prompts);
        var run = await WaitForEnd(runId, TimeSpan.FromMinutes(3));
        await host.StopAsync();

        Assert.True(run.State == RunState.Succeeded,
            $"run {run.State}: {run.Error}\n" + string.Join("\n", run.Stages.Select(s => $"{s.Name} {s.State}#{s.Attempt}: {s.Error}")));
        await using var db = store.CreateDbContext();
        var dataset = await db.Datasets.SingleAsync(d => d.RunId == runId);
        Assert.Equal((10, 1), (dataset.Count, dataset.BadCount));
        var rows = await db.Evaluations.Where(v => v.RunId == runId).ToListAsync();
        var artifacts = await db.Artifacts.Where(a => a.RunId == runId).ToListAsync();
        Assert.Equal(8, artifacts.Count(a => a.Kind == ArtifactKind.Grid)); // DMD's 1-step LoRA (from TSCD's) among them
        var report = await File.ReadAllTextAsync(store.Artifacts.GetFullPath(
            artifacts.Single(a => a.Kind == ArtifactKind.Report && a.StageKind == "evaluate-model" && a.Path.EndsWith("results.md")).Path));
        if (clip)
        {
            // every (model, sampler, steps) row set has both metrics, finite, clip-score with its interval
            var sets = rows.GroupBy(v => (v.Model, v.Sampler, v.Steps)).ToList();
            Assert.NotEmpty(sets);
            Assert.All(sets, set =>
                Assert.Superset(new HashSet<string> { "clip-score", "fd-clip" }, set.Select(v => v.Metric).ToHashSet()));
            Assert.All(rows.Where(v => v.Metric is "clip-score" or "fd-clip"),
                v => Assert.True(double.IsFinite(v.Value), $"{v.Metric} {v.Value}"));
            Assert.All(rows.Where(v => v.Metric == "clip-score"), v => Assert.True(v.Low is not null && v.High is not null));
            Assert.Contains($"CLIP from {clipDir}", report);
            Assert.Contains("against 10 real images", report);
            Assert.Contains("clip-score", report);
            return;
        }
        Assert.Empty(rows);
        Assert.Contains("Not measured", report);
        Assert.Contains("grid-tscd-k2-ddim-trailing.png", report);
        Assert.Contains("grid-dmd-k1-ddim-trailing.png", report);
        Assert.Equal(4, Directory.GetFiles(store.Artifacts.GetFullPath(artifacts.Single(a => a.Kind == ArtifactKind.Images).Path), "*.png").Length);
    }

    [Fact]
    public async Task A_corrupt_input_artifact_is_never_used_and_fails_the_run_through_the_fault()
    {
        var options = store.WorkerOptions(o => o.Roles = [Roles.Orchestrator, Roles.TeacherTrajectories]);
        var runId = await store.CreateRunAsync(TinyToy.Recipe(), options);
        Artifact dataset;
        await using (var db = store.CreateDbContext())
        {
            var stage = await db.Stages.SingleAsync(s => s.RunId == runId && s.Name == PrepareDatasetStage.StageName);
            stage.State = StageState.Succeeded;
            stage.Attempt = 1;
            await db.SaveChangesAsync();
            dataset = await store.AddOutputAsync(stage, ArtifactKind.Dataset, "dataset", "the shards");
        }
        await File.WriteAllTextAsync(store.Artifacts.GetFullPath(dataset.Path), "tampered");

        using var host = StartHost(options);
        await (await host.Services.GetRequiredService<IBus>().GetSendEndpoint(Roles.Queue(Roles.Orchestrator))).Send(new StartRun(runId));
        var run = await WaitForEnd(runId, TimeSpan.FromSeconds(30));
        await host.StopAsync();

        Assert.Equal(RunState.Failed, run.State);
        var trajectories = run.Stages.Single(s => s.Name == GenerateTrajectoriesStage.StageName);
        Assert.Equal(StageState.Failed, trajectories.State);
        Assert.Contains("ArtifactCorruptException", trajectories.Error);
        Assert.Contains("is corrupt", trajectories.Error);
        await using var check = store.CreateDbContext();
        Assert.Empty(await check.StageAttempts.Where(a => a.StageId == trajectories.Id).ToListAsync()); // never leased
    }
}

/// <summary>Tests that seed TorchSharp's global generator run one at a time.</summary>
[CollectionDefinition(nameof(TorchGlobalState), DisableParallelization = true)]
public sealed class TorchGlobalState;
