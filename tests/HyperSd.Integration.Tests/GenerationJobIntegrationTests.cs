using HyperSd.Contracts;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Services.Jobs;
using Microsoft.EntityFrameworkCore;
using Xunit.Abstractions;

namespace HyperSd.Integration.Tests;

/// <summary>
/// Generation jobs on a real deployment (RabbitMQ, PostgreSQL, hypersd-worker processes): three generators compete for
/// the chunks; a duplicated chunk command and a generator SIGKILLed mid-job leave exactly one image per (prompt, image
/// index) with its seed and hash; the same job on one generator gives the same bytes.
/// </summary>
[Collection(nameof(Integration))]
public sealed class GenerationJobIntegrationTests(ITestOutputHelper output)
{
    /// <summary>200 tiny toy images (16 px, four steps: a chunk lasts long enough to be caught mid-way by a kill on a loaded
    /// machine) in chunks of 8.</summary>
    static GenerationJobPlan Plan(string name) => GenerationJobPlanner.Plan(new GenerationJobSpec
    {
        Name = name, Model = "toy", Prompts = [.. Enumerable.Range(0, 40).Select(i => new PromptRow($"a red circle at position {i}"))],
        ImagesPerPrompt = 5, Steps = 4, Width = 16, Height = 16, BatchSize = 4, ChunkSize = 8, Seed = 1000,
    }, new GenerationLimits(), HyperSd.Testing.TestInputs.Temp);

    static async Task<GenerationJobStatus> WaitForEndAsync(Deployment deployment, Guid id)
    {
        GenerationJobStatus status = null!;
        await deployment.WaitUntilAsync(async () =>
            (status = (await deployment.Jobs.ShowAsync(id))!).State is RunState.Succeeded or RunState.Failed or RunState.Cancelled,
            "the job to end", TimeSpan.FromMinutes(4));
        return status;
    }

    /// <summary>Exactly the plan's images: one row each, its seed, its file a valid PNG with its parameters and hash, and
    /// no other PNG in the job's folder. Returns the bytes by file name.</summary>
    static async Task<Dictionary<string, byte[]>> AssertExactlyOnceAsync(Deployment deployment, Guid id, GenerationJobPlan plan)
    {
        await using var db = deployment.Db();
        var rows = await db.GeneratedImages.AsNoTracking().Where(i => i.JobId == id).ToListAsync();
        Assert.Equal(plan.Images.Select(i => (i.PromptIndex, i.ImageIndex, i.Seed)).Order(),
            rows.Select(r => (r.PromptIndex, r.ImageIndex, r.Seed)).Order());
        var dir = deployment.Artifacts.GetFullPath(GenerationJobs.OutputPathOf(plan.Name));
        // nothing else: no partial file or temporary folder of the killed attempt
        Assert.Equal(plan.Images.Select(i => i.File).Order(), Directory.GetFileSystemEntries(dir).Select(Path.GetFileName).Order());
        var bytes = new Dictionary<string, byte[]>();
        foreach (var row in rows)
        {
            var path = deployment.Artifacts.GetFullPath(row.Path);
            Assert.Equal(row.Sha256, await ContentHash.OfFileAsync(path));
            var p = GenerationParameters.FromPngText(ImageFiles.ReadPngText(path));
            Assert.Equal((row.Prompt, row.Seed, 16, plan.Spec.Steps), (p.Prompt, p.Seed, p.Width, p.Steps));
            bytes[Path.GetFileName(path)] = await File.ReadAllBytesAsync(path);
        }
        return bytes;
    }

    [Fact]
    public async Task Three_generators_one_killed_mid_job_make_each_image_once_and_the_bytes_one_generator_makes()
    {
        Dictionary<string, byte[]> three;
        await using (var deployment = new Deployment())
        {
            await deployment.StartWorkersAsync(Roles.Orchestrator);
            var generators = new[] { deployment.StartWorker(Roles.Generator), deployment.StartWorker(Roles.Generator),
                deployment.StartWorker(Roles.Generator) };
            await Task.WhenAll(generators.Select(g => g.WaitStartedAsync(TimeSpan.FromMinutes(2))));
            var plan = Plan("three");
            var id = await deployment.Jobs.SubmitAsync(plan);
            var runId = (await deployment.Jobs.ShowAsync(id))!.RunId;

            // the first chunk's command twice more: at most one delivery leases it
            await deployment.WaitForAsync(runId, r => r.Stages[0].State != StageState.Pending, "the first chunk's dispatch");
            var command = await deployment.CurrentCommandAsync(runId, GenerateChunkStage.StageName(0));
            await deployment.SendAsync(Roles.Generator, command);
            await deployment.SendAsync(Roles.Generator, command);

            // SIGKILL a generator while it holds a chunk, once some images are in. A chunk it held may have finished
            // between the read and the kill (a loaded machine): what it lost is read after the kill, and if it lost
            // nothing, the next holder is killed (one of the three generators stays)
            await deployment.WaitUntilAsync(async () => (await deployment.Jobs.ShowAsync(id))!.ImagesDone >= 16, "16 images");
            var killed = new List<string>();
            List<Stage> lost = [];
            for (int kill = 0; kill < 2 && lost.Count == 0; kill++)
            {
                Stage? held = null;
                await deployment.WaitUntilAsync(async () =>
                {
                    // a chunk in progress: its attempt has no outcome yet (a finished one shows running until its event)
                    await using var db = deployment.Db();
                    var open = await db.StageAttempts.Where(a => a.Outcome == null).Select(a => new { a.StageId, a.Attempt, a.Owner })
                        .ToListAsync();
                    held = (await deployment.RunAsync(runId)).Stages.FirstOrDefault(s => s is { State: StageState.Running }
                        && !killed.Contains(s.LeaseOwner!) && open.Any(o => o.StageId == s.Id && o.Attempt == s.Attempt && o.Owner == s.LeaseOwner));
                    return held is not null;
                }, "a chunk in progress");
                var victim = generators.Single(g => g.Name == held!.LeaseOwner);
                victim.Kill();
                killed.Add(victim.Name);
                // a chunk it finished may still show running until its event arrives: lost = its attempt has no outcome
                var running = (await deployment.RunAsync(runId)).Stages.Where(s => s is { State: StageState.Running } && s.LeaseOwner == victim.Name)
                    .ToList();
                await using (var attempts = deployment.Db())
                {
                    var unfinished = await attempts.StageAttempts.Where(a => a.Owner == victim.Name && a.Outcome == null)
                        .Select(a => new { a.StageId, a.Attempt }).ToListAsync();
                    lost = [.. running.Where(s => unfinished.Contains(new { StageId = s.Id, s.Attempt }))];
                }
                output.WriteLine($"killed {victim.Name} holding {held!.Name} attempt {held.Attempt} at " +
                                 $"{(await deployment.Jobs.ShowAsync(id))!.ImagesDone} images; it lost {string.Join(", ", lost.Select(s => s.Name))}");
            }
            Assert.True(lost.Count > 0, "the killed generators had finished their chunks before the kill");

            var status = await WaitForEndAsync(deployment, id);
            Assert.True(status.State == RunState.Succeeded, $"{status.State}: {status.Error}\n{deployment.WorkerLogs()}");
            Assert.Equal((200, 200), (status.ImagesDone, status.ImageCount));
            three = await AssertExactlyOnceAsync(deployment, id, plan);
            // the killed worker's chunks were redone by another, under a new attempt
            var stages = (await deployment.RunAsync(runId)).Stages;
            await using var db = deployment.Db();
            foreach (var chunk in lost)
            {
                var redone = stages.Single(s => s.Id == chunk.Id);
                Assert.True(redone.Attempt > chunk.Attempt, $"{redone.Name} attempt {redone.Attempt}");
                Assert.DoesNotContain((await db.StageAttempts.Where(a => a.StageId == chunk.Id).OrderBy(a => a.Attempt).LastAsync()).Owner,
                    killed);
            }
            output.WriteLine($"{status.ImagesPerSecond:F2} images/s");
        }

        // determinism: the same job on one generator gives byte-identical PNGs
        await using (var deployment = new Deployment())
        {
            await deployment.StartWorkersAsync(Roles.Orchestrator, Roles.Generator);
            var plan = Plan("three");
            var id = await deployment.Jobs.SubmitAsync(plan);
            var status = await WaitForEndAsync(deployment, id);
            Assert.True(status.State == RunState.Succeeded, $"{status.State}: {status.Error}\n{deployment.WorkerLogs()}");
            var one = await AssertExactlyOnceAsync(deployment, id, plan);
            Assert.Equal(one.Keys.Order(), three.Keys.Order());
            foreach (var (file, bytes) in one) Assert.True(bytes.AsSpan().SequenceEqual(three[file]), $"{file} differs");
        }
    }
}
