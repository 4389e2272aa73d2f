using System.Globalization;
using System.Text;
using System.Text.Json;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Services.Jobs;
using Microsoft.EntityFrameworkCore;
using Xunit.Abstractions;

namespace HyperSd.Integration.Tests;

/// <summary>A measurement, not a check CI runs: it runs where the environment variable <paramref name="variable"/> names
/// the file for its table.</summary>
public sealed class MeasurementFactAttribute : FactAttribute
{
    public MeasurementFactAttribute(string variable = "HYPERSD_JOB_SCALING_OUT")
    {
        if (Environment.GetEnvironmentVariable(variable) is not { Length: > 0 })
            Skip = $"a measurement (minutes): set {variable}=FILE to run it";
    }
}

/// <summary>
/// The same toy job on 1, 2 and 3 generator processes (RabbitMQ, PostgreSQL): each completes with every image once,
/// and the table of images/s (with the ratio to one worker) and of where a chunk's time goes is written to the test
/// output and to $HYPERSD_JOB_SCALING_OUT (docs/results.md has it). HYPERSD_JOB_SCALING_PROMPTS sets the job's size
/// (default 24 prompts × 4 images), HYPERSD_JOB_SCALING_CHUNK the chunk size (default 8).
/// </summary>
[Collection(nameof(Integration))]
public sealed class GenerationJobScalingTests(ITestOutputHelper output)
{
    sealed record Row(int Workers, int Images, double Seconds, double ImagesPerSecond, double QueueSeconds, double LoadSeconds,
        double GenerateSeconds, double RecordSeconds, double OtherSeconds);

    [MeasurementFact]
    public async Task The_same_job_on_one_two_and_three_generators_completes_and_its_rate_is_measured()
    {
        int prompts = int.TryParse(Environment.GetEnvironmentVariable("HYPERSD_JOB_SCALING_PROMPTS"), out var n) ? n : 24;
        int chunkSize = int.TryParse(Environment.GetEnvironmentVariable("HYPERSD_JOB_SCALING_CHUNK"), out var k) ? k : 8;
        var rows = new List<Row>();
        // determinism: every worker count makes the same bytes (sha256 by prompt and image index)
        Dictionary<(int, int), string>? first = null;
        foreach (var workers in new[] { 1, 2, 3 })
        {
            await using var deployment = new Deployment();
            await deployment.StartWorkersAsync(Roles.Orchestrator);
            var generators = Enumerable.Range(0, workers).Select(_ => deployment.StartWorker(Roles.Generator)).ToList();
            await Task.WhenAll(generators.Select(g => g.WaitStartedAsync(TimeSpan.FromMinutes(2))));
            var plan = GenerationJobPlanner.Plan(new GenerationJobSpec
            {
                Name = $"scaling-{workers}", Model = "toy", Prompts = [.. Enumerable.Range(0, prompts).Select(i => new PromptRow($"a red circle number {i}"))],
                ImagesPerPrompt = 4, Steps = 2, Width = 32, Height = 32, BatchSize = 4, ChunkSize = chunkSize,
            }, new GenerationLimits(), HyperSd.Testing.TestInputs.Temp);
            var id = await deployment.Jobs.SubmitAsync(plan);
            GenerationJobStatus status = null!;
            await deployment.WaitUntilAsync(async () => (status = (await deployment.Jobs.ShowAsync(id))!).State is not (RunState.Pending or RunState.Running),
                "the job to end", TimeSpan.FromMinutes(6));
            Assert.True(status.State == RunState.Succeeded, $"{status.State}: {status.Error}\n{deployment.WorkerLogs()}");
            await using var db = deployment.Db();
            var images = await db.GeneratedImages.Where(i => i.JobId == id).Select(i => new { i.PromptIndex, i.ImageIndex, i.Sha256 })
                .ToListAsync();
            Assert.Equal(plan.Images.Count, images.Select(i => (i.PromptIndex, i.ImageIndex)).Distinct().Count());
            Assert.Equal(plan.Images.Count, images.Count);
            var hashes = images.ToDictionary(i => (i.PromptIndex, i.ImageIndex), i => i.Sha256);
            first ??= hashes;
            Assert.True(first.All(h => hashes[h.Key] == h.Value), $"{workers} generators made other bytes than 1");

            var run = await deployment.RunAsync(status.RunId);
            var details = run.Stages.Select(s => JsonDocument.Parse(s.ProgressDetail!).RootElement).ToList();
            double Sum(string field) => details.Sum(d => d.GetProperty(field).GetDouble()) / run.Stages.Count;
            // queue: dispatched → leased; the chunk's wall: leased → finished (the store's clock, both)
            double queue = run.Stages.Average(s => (s.StartedAt!.Value - s.DispatchedAt!.Value).TotalSeconds);
            double wall = run.Stages.Average(s => (s.FinishedAt!.Value - s.StartedAt!.Value).TotalSeconds);
            double load = Sum("load_seconds"), generate = Sum("generate_seconds"), record = Sum("record_seconds");
            var seconds = (status.FinishedAt!.Value - status.StartedAt!.Value).TotalSeconds;
            rows.Add(new Row(workers, plan.Images.Count, seconds, plan.Images.Count / seconds, queue, load, generate, record,
                wall - load - generate - record));
        }

        var inv = CultureInfo.InvariantCulture;
        var table = new StringBuilder()
            .AppendLine("| generators | images | seconds | images/s | ratio to 1 | per chunk: queue wait (s) | model load (s) | generate + PNG (s) | hash + record (s) | other (s) |")
            .AppendLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var r in rows)
            table.AppendLine(string.Create(inv, $"| {r.Workers} | {r.Images} | {r.Seconds:F1} | {r.ImagesPerSecond:F2} | " +
                $"{r.ImagesPerSecond / rows[0].ImagesPerSecond:F2} | {r.QueueSeconds:F2} | {r.LoadSeconds:F2} | {r.GenerateSeconds:F2} | " +
                $"{r.RecordSeconds:F2} | {r.OtherSeconds:F2} |"));
        output.WriteLine($"chunk size {chunkSize}\n{table}");
        await File.AppendAllTextAsync(Environment.GetEnvironmentVariable("HYPERSD_JOB_SCALING_OUT")!,
            $"{prompts * 4} images, chunk size {chunkSize}\n{table}\n");
    }
}
