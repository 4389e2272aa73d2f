using System.Globalization;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using Microsoft.EntityFrameworkCore;
using Xunit.Abstractions;

namespace HyperSd.Integration.Tests;

/// <summary>
/// How long a dead worker goes unnoticed with the production defaults (heartbeat 5 s, lease 60 s, reconcile 5 s,
/// dispatch timeout 30 s, retry backoff 10 s): a TSCD trainer process SIGKILLed mid-stage, a replacement started at
/// once; the time from the kill until the orchestrator marks the attempt lost and until it dispatches attempt 2. Written
/// to the test output and to $HYPERSD_DETECTION_OUT (docs/results.md has it).
/// </summary>
[Collection(nameof(Integration))]
public sealed class DetectionTimeTests(ITestOutputHelper output)
{
    [MeasurementFact("HYPERSD_DETECTION_OUT")]
    public async Task A_dead_trainer_is_detected_within_its_lease_with_the_default_timings()
    {
        await using var deployment = new Deployment(new Timings(HeartbeatSeconds: 5, LeaseTimeoutSeconds: 60, DispatchTimeoutSeconds: 30,
            ReconcileSeconds: 5, RetryBackoffSeconds: 10));
        var workers = deployment.StartWorkers();
        var runId = await deployment.SubmitAsync(tscdSteps: 400);
        var k2 = Deployment.StageOf(await deployment.RunAsync(runId), "tscd-k2");
        await deployment.WaitForAsync(runId, r => Deployment.StageOf(r, "tscd-k2") is { State: StageState.Running, Progress: > 0 },
            "tscd-k2 under way", TimeSpan.FromMinutes(10));
        workers[Roles.SegmentConsistency].Kill();
        var killedAt = DateTimeOffset.UtcNow;
        deployment.StartWorker(Roles.SegmentConsistency);
        var redispatched = await deployment.WaitForAsync(runId, r => Deployment.StageOf(r, "tscd-k2").Attempt == 2,
            "attempt 2 of tscd-k2", TimeSpan.FromMinutes(5));
        await using var db = deployment.Db();
        var lost = await db.StageAttempts.SingleAsync(a => a.StageId == k2.Id && a.Attempt == 1);
        Assert.Equal(AttemptOutcome.Lost, lost.Outcome);
        double detected = (lost.FinishedAt!.Value - killedAt).TotalSeconds;
        double dispatched = (Deployment.StageOf(redispatched, "tscd-k2").DispatchedAt!.Value - killedAt).TotalSeconds;
        var line = string.Create(CultureInfo.InvariantCulture,
            $"| dead trainer (SIGKILL mid tscd-k2), defaults | {detected:F1} s to attempt 1 lost | {dispatched:F1} s to attempt 2 dispatched |");
        output.WriteLine(line);
        await File.AppendAllTextAsync(Environment.GetEnvironmentVariable("HYPERSD_DETECTION_OUT")!, line + "\n");
        // within the lease (60 s after the last heartbeat, at most 5 s before the kill) and one reconcile round
        Assert.InRange(detected, 50, 75);
    }
}
