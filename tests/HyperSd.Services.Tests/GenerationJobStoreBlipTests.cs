using HyperSd.Data.Entities;
using HyperSd.Services.Jobs;
using HyperSd.Services.Stages;
using HyperSd.Testing;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

namespace HyperSd.Services.Tests;

/// <summary>A generation job whose host loses PostgreSQL for a few seconds mid-job (every connection dropped, new ones
/// refused): the job completes with each image once and nothing left in its folder but its images.</summary>
[Collection(nameof(TorchGlobalState))]
public sealed class GenerationJobStoreBlipTests(PostgresDatabase database) : IClassFixture<PostgresDatabase>
{
    [Fact]
    public async Task The_store_down_for_a_moment_mid_job_and_the_job_completes_with_each_image_once()
    {
        using var store = new TestStore(database.ConnectionString);
        using var proxy = new TcpProxy(database.ConnectionString);
        using var flaky = new TestStore(proxy.ConnectionString(database.ConnectionString), migrate: false, artifactRoot: store.Artifacts.Root);
        using var host = TestHosts.Start(flaky.WorkerOptions(o =>
        {
            o.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
            o.LeaseTimeout = TimeSpan.FromSeconds(4);
            o.ReconcileInterval = TimeSpan.FromSeconds(1);
            o.Devices = ["cpu", "cpu"];
        }), StageCatalogue.Default());
        var jobs = host.Services.GetRequiredService<GenerationJobs>();
        var plan = GenerationJobPlanner.Plan(new GenerationJobSpec
        {
            Name = "blip", Model = "toy", Prompts = [.. Enumerable.Range(0, 16).Select(i => new PromptRow($"a red circle number {i}"))],
            ImagesPerPrompt = 3, Steps = 1, Width = 16, Height = 16, BatchSize = 2, ChunkSize = 4, Seed = 7,
        }, new GenerationLimits(), TestInputs.Temp);
        var id = await jobs.SubmitAsync(plan);

        var direct = store.CreateDbContext();
        async Task<int> DoneAsync() => await direct.GeneratedImages.CountAsync(i => i.JobId == id);
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        while (await DoneAsync() < 8 && DateTime.UtcNow < deadline) await Task.Delay(50);
        proxy.Cut();
        int atCut = await DoneAsync();
        await Task.Delay(TimeSpan.FromSeconds(6));
        Assert.True(atCut < plan.Images.Count, "the job ended before the store went down");
        proxy.Restore();

        GenerationJobStatus status;
        // every stage has succeeded well before this bound: twice the run still stayed Running (48 of 48 images), because the
        // last two chunks completed at once and neither transition finished it; the reconciler now does (RunLifecycleTests)
        deadline = DateTime.UtcNow + TimeSpan.FromMinutes(6);
        while ((status = (await jobs.ShowAsync(id))!).State is RunState.Pending or RunState.Running && DateTime.UtcNow < deadline)
            await Task.Delay(200);
        if (status.State != RunState.Succeeded)
        {
            var stages = await direct.Stages.AsNoTracking().Where(s => s.RunId == status.RunId && s.State != StageState.Succeeded)
                .Select(s => $"{s.Name} {s.State}#{s.Attempt} lease {s.LeaseOwner} until {s.LeaseExpiresAt:O} progress {s.ProgressAt:O}")
                .ToListAsync();
            var ids = await direct.Stages.Where(s => s.RunId == status.RunId).Select(s => s.Id).ToListAsync();
            var attempts = await direct.StageAttempts.AsNoTracking().Where(a => ids.Contains(a.StageId))
                .Select(a => $"{a.StageId}#{a.Attempt} {a.Outcome} {a.Error}").ToListAsync();
            Assert.Fail($"{status.State}: {status.Error} ({status.ImagesDone}/{status.ImageCount}); now {DateTime.UtcNow:O}; stages not " +
                        $"done: {string.Join("; ", stages)}; attempts: {string.Join("; ", attempts)}");
        }
        var rows = await direct.GeneratedImages.AsNoTracking().Where(i => i.JobId == id).ToListAsync();
        Assert.Equal(plan.Images.Select(i => (i.PromptIndex, i.ImageIndex, i.Seed)).Order(),
            rows.Select(r => (r.PromptIndex, r.ImageIndex, r.Seed)).Order());
        var dir = store.Artifacts.GetFullPath(GenerationJobs.OutputPathOf("blip"));
        Assert.Equal(plan.Images.Select(i => i.File).Order(), Directory.GetFileSystemEntries(dir).Select(Path.GetFileName).Order());
        await direct.DisposeAsync();
        await host.StopAsync();
    }
}
