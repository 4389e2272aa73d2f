using System.IO.Compression;
using System.Text;
using System.Text.Json;
using HyperSd.Contracts;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Services.Jobs;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.RewardScorer;
using HyperSd.Services.Stages;
using HyperSd.Testing;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit.Abstractions;

namespace HyperSd.Services.Tests;

/// <summary>Best-of-n generation jobs: best_of, reward, score and reward_files validated by field; candidates' seeds; whole
/// jobs on the embedded default whose scoring stage (reward-scorer role, the committed toy recognizer) scores every candidate
/// and keeps the best of each image; a scoring stage redone after a kill scores only what is unscored.</summary>
[Collection(nameof(TorchGlobalState))]
public sealed class BestOfJobTests(ITestOutputHelper output) : IDisposable
{
    readonly TestStore store = new();
    static readonly Runs.InputRoots Roots = TestInputs.Temp;

    public void Dispose() => store.Dispose();

    static readonly PromptRow[] Captions =
        [new("a red circle at the top left"), new("a blue square in the center"), new("a large green triangle at the bottom right")];

    static GenerationJobSpec Spec(IReadOnlyList<PromptRow> prompts) => new()
    {
        Model = "toy", Prompts = prompts, Width = 32, Height = 32, Steps = 2, ImagesPerPrompt = 2, BatchSize = 2, ChunkSize = 4, Seed = 100,
        BestOf = 3, Reward = "toy-structure",
    };

    static List<string> Problems(GenerationJobSpec spec, GenerationLimits? limits = null) =>
        Assert.Throws<JobValidationException>(() => GenerationJobPlanner.Plan(spec, limits ?? new GenerationLimits(), Roots))
            .Problems.Select(p => p.ToString()).ToList();

    [Fact]
    public void Candidates_seeds_start_at_the_images_own_and_never_repeat_another_images()
    {
        var plan = GenerationJobPlanner.Plan(Spec([new("a red circle at the top left"), new("a blue square in the center")]),
            new GenerationLimits(), Roots);
        Assert.Equal([100L, 101L, 102L, 103L], plan.Images.Select(i => i.Seed));
        // span 4 (seeds 100 to 103): candidate j adds 4j; an image's candidates are adjacent
        Assert.Equal([(0, 0, 0, 100L), (0, 0, 1, 104L), (0, 0, 2, 108L), (0, 1, 0, 101L), (0, 1, 1, 105L), (0, 1, 2, 109L)],
            plan.Candidates.Take(6).Select(c => (c.PromptIndex, c.ImageIndex, c.Candidate!.Value, c.Seed)));
        Assert.Equal(12, plan.Candidates.Select(c => c.Seed).Distinct().Count());
        Assert.Equal("00000-0001-c02.png", plan.Candidates[5].File);
        Assert.Equal([4, 4, 4], plan.Chunks.Select(c => c.Length));

        var perRow = GenerationJobPlanner.Plan(Spec([new("a red circle at the top left", Seed: 7),
            new("a blue square in the center", Seed: 70)]) with { SeedPolicy = SeedPolicy.PerRow }, new GenerationLimits(), Roots);
        // seeds 7, 8, 70, 71: span 65
        Assert.Equal([7L, 72L, 137L, 8L, 73L, 138L, 70L, 135L, 200L, 71L, 136L, 201L], perRow.Candidates.Select(c => c.Seed));

        // best_of 1 plans exactly what it did before: the images themselves, plain file names
        var plain = GenerationJobPlanner.Plan(Spec(Captions) with { BestOf = 1, Reward = null }, new GenerationLimits(), Roots);
        Assert.Same(plain.Images, plain.Candidates);
        Assert.Equal(("00000-0000.png", null), (plain.Images[0].File, plain.Images[0].Candidate));
        var scoredOnly = GenerationJobPlanner.Plan(Spec(Captions) with { BestOf = 1, Score = true }, new GenerationLimits(), Roots);
        Assert.Equal(6, scoredOnly.Candidates.Count);
    }

    [Theory]
    [InlineData(0, null, false, "best_of: must be 1 (off) to 64 (this deployment's limit), got 0")]
    [InlineData(65, "toy-structure", false, "best_of: must be 1 (off) to 64 (this deployment's limit), got 65")]
    [InlineData(3, null, false, "reward: required with best_of 3: the reward that scores the images (for the toy model: " +
                                "toy-structure, toy-structure-logp)")]
    [InlineData(1, null, true, "reward: required with best_of 1 and score")]
    [InlineData(3, "pickscore", false, "reward: unknown reward 'pickscore' for the toy model (allowed: toy-structure, toy-structure-logp)")]
    [InlineData(3, "nope", false, "reward: unknown reward 'nope' for the toy model")]
    [InlineData(1, "toy-structure", false, "reward: 'toy-structure' scores nothing: set best_of above 1 or score true")]
    public void A_bad_best_of_or_reward_is_a_problem_naming_the_field(int bestOf, string? reward, bool score, string expected)
    {
        var problem = Assert.Single(Problems(Spec(Captions) with { BestOf = bestOf, Reward = reward, Score = score }));
        Assert.StartsWith(expected, problem);
    }

    [Fact]
    public void A_reward_is_checked_against_the_models_world_and_its_inputs()
    {
        // the toy rewards read 32 × 32 images of toy captions, and no files
        var toy = Problems(Spec([new("a red circle at the top left"), new("a cat", Line: "p.txt:2")]) with
        {
            Width = 64, RewardFiles = new Recipes.RewardsRecipe { Pickscore = "/etc" },
        });
        Assert.Contains("width: the toy-structure reward reads 32 × 32 images, got 64", toy);
        Assert.Contains(toy, p => p.StartsWith("p.txt:2: prompt: the toy-structure reward reads toy captions: cannot parse 'a cat'"));
        Assert.Contains("reward_files: the toy rewards read no files (the worker's toy recognizer)", toy);
        Assert.Contains(toy, p => p.StartsWith("reward_files.pickscore: '/etc' is outside the models root"));

        // a real-scale model takes the real-scale rewards, whose files must be given, under the models root
        var model = Path.Combine(store.Root, "sd15");
        Directory.CreateDirectory(model);
        File.WriteAllText(Path.Combine(model, "model_index.json"), "{}");
        var real = Spec([new("a cat")]) with { Model = model, Width = 64, Height = 64 };
        Assert.Equal(["reward: unknown reward 'toy-structure' for a real-scale model (allowed: laion-aesthetic, pickscore)"],
            Problems(real));
        Assert.Equal(["reward_files.clip: required by the laion-aesthetic reward",
                "reward_files.aesthetic_predictor: required by the laion-aesthetic reward"],
            Problems(real with { Reward = "laion-aesthetic" }));
        Assert.Equal(["reward_files.pickscore: no such file or folder: 'no-such-pickscore' (under the models root)"],
            Problems(real with { Reward = "pickscore", RewardFiles = new Recipes.RewardsRecipe { Pickscore = "no-such-pickscore" } }));
    }

    [Fact]
    public void Candidates_count_toward_the_image_limit_and_their_seeds_must_fit_64_bits()
    {
        Assert.Equal(["best_of: 6 images × best_of 3 = 18 candidates; a job makes at most 10"],
            Problems(Spec(Captions), new GenerationLimits(MaxImages: 10)));
        Assert.Equal(["best_of: the candidates' seeds (image seeds 0 to 9223372036854775806, best_of 3) overflow a 64-bit seed"],
            Problems(Spec([new("a red circle at the top left", Seed: long.MaxValue - 1, Count: 1),
                new("a blue square in the center", Seed: 0, Count: 1)]) with { SeedPolicy = SeedPolicy.PerRow }));
    }

    IHost StartHost() => TestHosts.Start(store.WorkerOptions(o =>
    {
        o.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
        o.ReconcileInterval = TimeSpan.FromSeconds(1);
        o.Devices = ["cpu", "cpu"];
    }), StageCatalogue.Default());

    async Task<GenerationJobStatus> RunToEndAsync(GenerationJobs jobs, Guid id)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(3);
        while (true)
        {
            var status = (await jobs.ShowAsync(id))!;
            if (status.State is RunState.Succeeded or RunState.Failed or RunState.Cancelled)
            {
                Assert.True(status.State == RunState.Succeeded, $"{status.State}: {status.Error}");
                return status;
            }
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"job still {status.State}: {status.ImagesDone}/{status.ImageCount}");
            await Task.Delay(200);
        }
    }

    async Task<List<GeneratedImage>> ImagesAsync(Guid job)
    {
        await using var db = store.CreateDbContext();
        return await db.GeneratedImages.AsNoTracking().Where(i => i.JobId == job)
            .OrderBy(i => i.PromptIndex).ThenBy(i => i.ImageIndex).ThenBy(i => i.Candidate).ToListAsync();
    }

    static async Task<List<ManifestLine>> ManifestAsync(GenerationJobs jobs, Guid id)
    {
        var manifest = new MemoryStream();
        await jobs.WriteManifestAsync(id, manifest);
        return Encoding.UTF8.GetString(manifest.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonSerializer.Deserialize<ManifestLine>(l, GenerationJobs.Json)!).ToList();
    }

    [Fact]
    public async Task A_best_of_3_job_keeps_the_best_scored_candidate_of_each_image()
    {
        using var host = StartHost();
        var jobs = host.Services.GetRequiredService<GenerationJobs>();
        var plan = GenerationJobPlanner.Plan(Spec(Captions) with { Name = "best-of-3" }, new GenerationLimits(), Roots);
        var id = await jobs.SubmitAsync(plan);
        var status = await RunToEndAsync(jobs, id);
        Assert.Equal((6, 6, 18, 18, 18, 5, 5, "toy-structure"), (status.ImagesDone, status.ImageCount, status.CandidatesDone,
            status.CandidateCount, status.ImagesScored, status.ChunksDone, status.ChunkCount, status.Reward));
        var run = await store.RunAsync(status.RunId);
        var scoring = run.Stages.Single(s => s.Kind == ScoreImagesStage.Kind);
        Assert.Equal((Roles.RewardScorer, StageState.Succeeded, run.Stages.Max(s => s.Index)), (scoring.Role, scoring.State, scoring.Index));

        var images = await ImagesAsync(id);
        Assert.Equal(plan.Candidates.Select(c => (c.PromptIndex, c.ImageIndex, c.Candidate!.Value, c.Seed)),
            images.Select(i => (i.PromptIndex, i.ImageIndex, i.Candidate, i.Seed)));
        Assert.All(images, i => Assert.True(i.Score is { } s && double.IsFinite(s) && s is >= 0 and <= 1 && i.RewardName == "toy-structure",
            $"{i.Path}: score {i.Score}, reward {i.RewardName}"));
        foreach (var group in images.GroupBy(i => (i.PromptIndex, i.ImageIndex)))
        {
            var kept = Assert.Single(group, i => i.Kept);
            Assert.Equal(group.Max(i => i.Score), kept.Score);
        }
        // every candidate's file stays in the job's folder
        var dir = store.Artifacts.GetFullPath(GenerationJobs.OutputPathOf("best-of-3"));
        Assert.Equal(images.Select(i => Path.GetFileName(i.Path)), Directory.GetFiles(dir).Select(Path.GetFileName).Order());
        foreach (var image in images) Assert.Equal(await ContentHash.OfFileAsync(store.Artifacts.GetFullPath(image.Path)), image.Sha256);

        // the manifest and the zip: the kept images, their scores and their candidates' scores
        var lines = await ManifestAsync(jobs, id);
        var keptRows = images.Where(i => i.Kept).ToList();
        Assert.Equal(keptRows.Select(i => (i.PromptIndex, i.ImageIndex, i.Candidate, i.Seed, Path.GetFileName(i.Path), i.Score)),
            lines.Select(l => (l.PromptIndex, l.ImageIndex, l.Candidate!.Value, l.Seed, l.File, l.Score)));
        Assert.All(lines, l => Assert.Equal("toy-structure", l.Reward));
        Assert.Equal(images.Select(i => new CandidateScore(i.Candidate, i.Seed, i.Score)), lines.SelectMany(l => l.Candidates!));
        using (var zip = new ZipArchive(new MemoryStream(await ZipAsync(jobs, id))))
            Assert.Equal([.. lines.Select(l => l.File), "manifest.jsonl"], zip.Entries.Select(e => e.FullName));

        // the same job scoring its images without best-of-n: candidate 0 of each image is the image it makes
        var single = GenerationJobPlanner.Plan(Spec(Captions) with { Name = "best-of-1", BestOf = 1, Score = true }, new GenerationLimits(),
            Roots);
        var singleId = await jobs.SubmitAsync(single);
        var singleStatus = await RunToEndAsync(jobs, singleId);
        Assert.Equal((6, 6, 6, 1), (singleStatus.ImagesDone, singleStatus.CandidatesDone, singleStatus.ImagesScored, singleStatus.BestOf));
        var singles = await ImagesAsync(singleId);
        Assert.All(singles, i => Assert.True(i.Kept && i.Candidate == 0 && i.Score is not null, i.Path));
        var singleLines = await ManifestAsync(jobs, singleId);
        Assert.All(singleLines, l => Assert.True(l.Candidate is null && l.Candidates is null && l.Score is not null, l.File));
        Assert.Equal(images.Where(i => i.Candidate == 0).Select(i => i.Seed), singles.Select(i => i.Seed));

        double keptMean = keptRows.Average(i => i.Score!.Value), singleMean = singles.Average(i => i.Score!.Value);
        output.WriteLine($"toy-structure on 6 images: best of 3 kept mean {keptMean:F4}, best of 1 mean {singleMean:F4}, " +
                         $"all candidates' mean {images.Average(i => i.Score!.Value):F4}");
        // each kept score is the best of its candidates, candidate 0 among them (the best_of 1 image, up to rounding)
        Assert.True(keptMean >= singleMean - 1e-3, $"kept mean {keptMean} below the best_of 1 mean {singleMean}");
        await host.StopAsync();
    }

    static async Task<byte[]> ZipAsync(GenerationJobs jobs, Guid id)
    {
        var zipped = new MemoryStream();
        await jobs.WriteZipAsync(id, zipped);
        return zipped.ToArray();
    }

    [Fact]
    public async Task A_scoring_stage_redone_after_a_kill_scores_only_the_unscored_and_a_redelivered_command_changes_nothing()
    {
        using var host = StartHost();
        var jobs = host.Services.GetRequiredService<GenerationJobs>();
        var plan = GenerationJobPlanner.Plan(Spec(Captions) with { Name = "rescored" }, new GenerationLimits(), Roots);
        var id = await jobs.SubmitAsync(plan);
        var status = await RunToEndAsync(jobs, id);
        var first = await ImagesAsync(id);

        // what a scoring stage killed mid-way leaves: the first groups scored and chosen, the rest unscored; and a failed
        // run. Candidate 0 of image (1, 0) keeps a score no reward gives, in a group not yet complete.
        await using (var db = store.CreateDbContext())
        {
            var rows = await db.GeneratedImages.Where(i => i.JobId == id).ToListAsync();
            foreach (var row in rows.Where(r => r.PromptIndex >= 1))
            {
                row.Kept = false;
                row.Score = row is { PromptIndex: 1, ImageIndex: 0, Candidate: 0 } ? 1000 : null;
                row.RewardName = row.Score is null ? null : row.RewardName;
            }
            var run = await db.Runs.Include(r => r.Stages).SingleAsync(r => r.Id == status.RunId);
            run.State = RunState.Failed;
            run.Error = "killed";
            var scoring = run.Stages.Single(s => s.Kind == ScoreImagesStage.Kind);
            scoring.State = StageState.Failed;
            await db.SaveChangesAsync();
        }
        Assert.Equal(2, (await jobs.ShowAsync(id))!.ImagesDone);
        Assert.Equal(RunState.Running, await jobs.ResumeAsync(id));
        var resumed = await RunToEndAsync(jobs, id);
        Assert.Equal((6, 18), (resumed.ImagesDone, resumed.ImagesScored));
        var second = await ImagesAsync(id);
        Assert.Equal(first.Select(i => i.Id), second.Select(i => i.Id));
        for (int k = 0; k < first.Count; k++)
        {
            var (was, now) = (first[k], second[k]);
            if (now is { PromptIndex: 1, ImageIndex: 0, Candidate: 0 })
                Assert.True(now.Score == 1000 && now.Kept, "a score stored before the kill was scored again");
            else
            {
                // re-scored images get the score they had (the reward is deterministic); the choice follows the stored scores
                Assert.Equal(was.Score!.Value, now.Score!.Value, 1e-6);
                Assert.Equal(now.PromptIndex == 1 && now.ImageIndex == 0 ? false : was.Kept, now.Kept);
            }
        }

        // the scoring command again (a redelivery): its attempt is no longer the dispatched one, so nothing changes
        var command = await host.Services.GetRequiredService<RunLifecycle>().CurrentCommandAsync(status.RunId, ScoreImagesStage.StageName);
        await (await host.Services.GetRequiredService<ISendEndpointProvider>().GetSendEndpoint(
            host.Services.GetRequiredService<Hosting.RoleQueues>().Address(Roles.RewardScorer))).Send(command);
        await Task.Delay(1500);
        Assert.Equal(second.Select(i => (i.Id, i.Score, i.Kept)), (await ImagesAsync(id)).Select(i => (i.Id, i.Score, i.Kept)));
        var run2 = await store.RunAsync(status.RunId);
        Assert.Equal((RunState.Succeeded, 2), (run2.State, run2.Stages.Single(s => s.Kind == ScoreImagesStage.Kind).Attempt));
        await host.StopAsync();
    }
}
