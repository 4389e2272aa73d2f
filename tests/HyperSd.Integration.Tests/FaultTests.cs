using System.Text.Json;
using HyperSd.Contracts;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Testing;
using HyperSd.Services.DatasetPrep;
using HyperSd.Services.DistributionMatching;
using HyperSd.Services.Evaluator;
using HyperSd.Services.Execution;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using HyperSd.Services.TeacherTrajectories;
using Microsoft.EntityFrameworkCore;
using Xunit.Abstractions;

namespace HyperSd.Integration.Tests;

/// <summary>Faults of a deployment with each role in its own process, over real RabbitMQ and PostgreSQL servers.</summary>
[Collection(nameof(Integration))]
public sealed class FaultTests(ITestOutputHelper output)
{
    const string K2 = "tscd-k2";
    /// <summary>TSCD stages long enough to be caught mid-stage (a checkpoint every 2 steps).</summary>
    const int TscdSteps = 16;

    [Fact]
    public Task A_trainer_killed_mid_stage_is_replaced_and_the_stage_resumes_from_its_last_checkpoint() =>
        KillMidStageAndResume(K2, Roles.SegmentConsistency, TscdSteps, tscdSteps: TscdSteps);

    [Fact]
    public Task A_dmd_trainer_killed_mid_stage_is_replaced_and_the_stage_resumes_from_its_last_checkpoint() =>
        KillMidStageAndResume(DmdStage.StageName, Roles.DmdTrainer, DmdSteps,
            edit: yaml => yaml.Replace("dmd: {steps: 4,", $"dmd: {{steps: {DmdSteps},").Replace("checkpoint_every: 1}", "checkpoint_every: 2}"));

    /// <summary>DMD iterations enough to be caught mid-stage (a checkpoint every 2).</summary>
    const int DmdSteps = 24;

    /// <summary>Once a checkpoint of <paramref name="name"/> is stored, SIGKILLs its worker; a replacement's attempt 2 resumes
    /// from a stored checkpoint and the run completes.</summary>
    async Task KillMidStageAndResume(string name, string role, int steps, int tscdSteps = 4, Func<string, string>? edit = null)
    {
        await using var deployment = new Deployment(new Timings(LeaseTimeoutSeconds: 3));
        var workers = deployment.StartWorkers();
        var runId = await deployment.SubmitAsync(tscdSteps, edit);

        var planned = Deployment.StageOf(await deployment.RunAsync(runId), name);
        await deployment.WaitUntilAsync(async () =>
        {
            await using var db = deployment.Db();
            return await db.Artifacts.AnyAsync(a => a.StageId == planned.Id && a.Kind == ArtifactKind.Checkpoint);
        }, $"a checkpoint of {name}");
        var killed = workers[role];
        killed.Kill();
        var atKill = Deployment.StageOf(await deployment.RunAsync(runId), name);
        List<string> checkpoints;
        await using (var db = deployment.Db())
        {
            var unfinished = await db.StageAttempts.AnyAsync(a => a.StageId == planned.Id && a.Attempt == 1 && a.Outcome == null);
            Assert.True(atKill is { State: StageState.Running, Attempt: 1 } && unfinished,
                $"{name} should still be running its first attempt when its worker dies, but it is {atKill.State} at attempt {atKill.Attempt}");
            checkpoints = await db.Artifacts.Where(a => a.StageId == planned.Id && a.Kind == ArtifactKind.Checkpoint).Select(a => a.Path)
                .ToListAsync();
        }

        var replacement = deployment.StartWorker(role);
        await deployment.WaitForEndAsync(runId);
        await deployment.AssertCompleteAsync(runId);

        var run = await deployment.RunAsync(runId);
        var stage = Deployment.StageOf(run, name);
        Assert.Equal(2, stage.Attempt);
        var attempts = (await deployment.AttemptsAsync(run)).Where(a => a.StageId == stage.Id).OrderBy(a => a.Attempt).ToList();
        Assert.Equal([(1, AttemptOutcome.Lost, killed.Name), (2, AttemptOutcome.Succeeded, replacement.Name)],
            attempts.Select(a => (a.Attempt, a.Outcome!.Value, a.Owner)));
        // the second attempt trained on from a checkpoint of the first, not from step 0
        using var detail = JsonDocument.Parse(stage.ProgressDetail!);
        int resumedFrom = detail.RootElement.GetProperty("resumed_from").GetInt32();
        Assert.True(resumedFrom >= 2, $"{name} attempt 2 resumed from step {resumedFrom}: {stage.ProgressDetail}");
        Assert.Equal(steps, detail.RootElement.GetProperty("steps").GetInt32());
        output.WriteLine($"{name}: worker killed with checkpoints {string.Join(", ", checkpoints.Select(Path.GetFileName).Order())} " +
                         $"stored; attempt 2 resumed from step {resumedFrom} of {steps}");
    }

    [Fact]
    public async Task A_stage_command_delivered_more_than_once_gives_one_result()
    {
        await using var deployment = new Deployment();
        deployment.StartWorkers(Roles.Orchestrator, Roles.DatasetPrep, Roles.TeacherTrajectories, Roles.RewardScorer, Roles.DmdTrainer,
            Roles.LoraMerger,
            Roles.Evaluator, Roles.Generator);
        var runId = await deployment.SubmitAsync();

        // tscd-k2's command waits in its queue (no trainer yet): deliver two more copies, then let two trainers race
        await deployment.WaitForAsync(runId, r => Deployment.StageOf(r, K2).State == StageState.Dispatched, "tscd-k2 to be dispatched");
        var command = await deployment.CurrentCommandAsync(runId, K2);
        await deployment.SendAsync(Roles.SegmentConsistency, command);
        await deployment.SendAsync(Roles.SegmentConsistency, command);
        Assert.True(deployment.QueueDepths()[Roles.SegmentConsistency] >= 3, "the command and its two copies wait in the queue");
        var trainers = new[] { deployment.StartWorker(Roles.SegmentConsistency), deployment.StartWorker(Roles.SegmentConsistency) };
        await deployment.WaitForEndAsync(runId);
        var artifacts = await deployment.AssertCompleteAsync(runId);

        var run = await deployment.RunAsync(runId);
        Assert.All(run.Stages, s => Assert.Equal(1, s.Attempt));
        var attempts = await deployment.AttemptsAsync(run);
        Assert.Equal(run.Stages.Count, attempts.Count); // one lease per stage: the copies leased nothing
        Assert.Contains(attempts.Single(a => a.StageId == Deployment.StageOf(run, K2).Id).Owner, trainers.Select(t => t.Name));
        deployment.AssertStoredAreRecorded(runId, artifacts.Select(a => a.Path)); // no stray files

        // commands of finished stages delivered again change nothing
        int evaluations;
        await using (var before = deployment.Db())
            evaluations = await before.Evaluations.CountAsync(v => v.RunId == runId);
        await deployment.SendAsync(Roles.DatasetPrep, await deployment.CurrentCommandAsync(runId, PrepareDatasetStage.StageName));
        await deployment.SendAsync(Roles.SegmentConsistency, await deployment.CurrentCommandAsync(runId, "tscd-k1"));
        await deployment.SendAsync(Roles.Evaluator, await deployment.CurrentCommandAsync(runId, EvaluateModelStage.StageName));
        await deployment.WaitUntilAsync(() => Task.FromResult(
                deployment.QueueDepths() is var q && q[Roles.DatasetPrep] == 0 && q[Roles.SegmentConsistency] == 0 && q[Roles.Evaluator] == 0),
            "the repeated commands to be consumed");
        await using var db = deployment.Db();
        Assert.Equal(artifacts.Count, await db.Artifacts.CountAsync(a => a.RunId == runId));
        Assert.Equal(1, await db.Datasets.CountAsync(d => d.RunId == runId));
        Assert.Equal(evaluations, await db.Evaluations.CountAsync(v => v.RunId == runId));
        Assert.Equal(run.Stages.Count, (await deployment.AttemptsAsync(run)).Count);
        Assert.Equal(RunState.Succeeded, (await deployment.RunAsync(runId)).State);
        deployment.AssertStoredAreRecorded(runId, artifacts.Select(a => a.Path));
        Assert.DoesNotContain(deployment.QueueDepths(), q => q.Key.EndsWith("_error", StringComparison.Ordinal) && q.Value > 0);
    }

    [Fact]
    public async Task A_run_survives_a_RabbitMQ_restart()
    {
        await using var deployment = new Deployment();
        deployment.StartWorkers();
        var runId = await deployment.SubmitAsync(tscdSteps: TscdSteps);
        await deployment.WaitForAsync(runId, r => Deployment.StageOf(r, K2).State == StageState.Running, "tscd-k2 to run");

        // broker down while the trainer works, and while it reports its result if it finishes meanwhile
        RabbitMqServer.StopApp();
        try
        {
            var k2 = Deployment.StageOf(await deployment.RunAsync(runId), K2);
            var until = DateTime.UtcNow.AddSeconds(20);
            while (DateTime.UtcNow < until)
            {
                await using var db = deployment.Db();
                if (await db.StageAttempts.AnyAsync(a => a.StageId == k2.Id && a.Outcome != null)) break;
                await Task.Delay(200);
            }
            await Task.Delay(1000);
        }
        finally
        {
            RabbitMqServer.StartApp();
        }

        await deployment.WaitForEndAsync(runId);
        await deployment.AssertCompleteAsync(runId);
        var run = await deployment.RunAsync(runId);
        var attempts = await deployment.AttemptsAsync(run);
        output.WriteLine(string.Join("\n", attempts.Select(a =>
            $"{run.Stages.Single(s => s.Id == a.StageId).Name} attempt {a.Attempt}: {a.Outcome} ({a.Owner}) {a.Error}")));
        // nothing ran twice: a stage whose worker finished while its event waited out the outage is no lost stage
        Assert.All(run.Stages, s => Assert.Equal(1, s.Attempt));
        Assert.Equal(run.Stages.Count, attempts.Count);
    }

    [Fact]
    public async Task A_stage_command_survives_a_RabbitMQ_restart_on_a_quorum_queue()
    {
        // the reconciler never re-sends here: the command consumed after the restart is the one sent before it
        await using var deployment = new Deployment(new Timings(DispatchTimeoutSeconds: 3600), quorum: true);
        await deployment.StartWorkersAsync(Roles.Orchestrator);
        var runId = await deployment.SubmitAsync();
        const string prepare = PrepareDatasetStage.StageName;
        await deployment.WaitForAsync(runId, r => Deployment.StageOf(r, prepare).State == StageState.Dispatched, "prepare-dataset to be dispatched");
        await deployment.WaitUntilAsync(() => Task.FromResult(deployment.QueueDepths().GetValueOrDefault(Roles.DatasetPrep) == 1),
            "the command in dataset-prep's queue (no worker serves it yet)");
        // every role's queue (declared by the client and the orchestrator before any worker of the role ran) and the
        // orchestrator's (declared by its receive endpoint too) is a quorum queue
        var types = deployment.QueueTypes();
        Assert.All(StageCatalogue.Default().Roles, role => Assert.Equal((role, "quorum"), (role, types.GetValueOrDefault(role))));

        RabbitMqServer.StopApp();
        try
        {
            await Task.Delay(1000);
        }
        finally
        {
            RabbitMqServer.StartApp();
        }

        await deployment.WaitUntilAsync(() => Task.FromResult(deployment.QueueDepths().GetValueOrDefault(Roles.DatasetPrep) == 1),
            "the command to be in dataset-prep's queue after the restart", TimeSpan.FromSeconds(30));
        var worker = deployment.StartWorker(Roles.DatasetPrep);
        var run = await deployment.WaitForAsync(runId, r => Deployment.StageOf(r, prepare).State == StageState.Succeeded,
            "prepare-dataset to succeed");
        var stage = Deployment.StageOf(run, prepare);
        var attempt = (await deployment.AttemptsAsync(run)).Single(a => a.StageId == stage.Id);
        Assert.Equal((1, AttemptOutcome.Succeeded, worker.Name), (attempt.Attempt, attempt.Outcome!.Value, attempt.Owner));
        // the orchestrator took the outcome off its own quorum queue and dispatched the next stage
        await deployment.WaitForAsync(runId, r => r.Stages.Any(s => s.Index > stage.Index && s.State == StageState.Dispatched),
            "the next stage to be dispatched");
    }

    [Fact]
    public async Task A_corrupt_input_goes_to_the_error_queue_and_fails_the_run_and_resume_completes_it_once_repaired()
    {
        await using var deployment = new Deployment();
        deployment.StartWorkers(Roles.Orchestrator, Roles.DatasetPrep, Roles.SegmentConsistency, Roles.RewardScorer, Roles.DmdTrainer,
            Roles.LoraMerger,
            Roles.Evaluator, Roles.Generator);
        var runId = await deployment.SubmitAsync();
        await deployment.WaitForAsync(runId, r => Deployment.StageOf(r, PrepareDatasetStage.StageName).State == StageState.Succeeded, "the dataset");

        // damage one shard of the stored dataset before the trajectories worker reads it
        Artifact dataset;
        await using (var db = deployment.Db())
            dataset = await db.Artifacts.AsNoTracking().SingleAsync(a => a.RunId == runId && a.Kind == ArtifactKind.Dataset);
        var shard = Directory.EnumerateFiles(deployment.Artifacts.GetFullPath(dataset.Path), "*.safetensors", SearchOption.AllDirectories).Order().First();
        var original = await File.ReadAllBytesAsync(shard);
        var damaged = (byte[])original.Clone();
        damaged[^1] ^= 0xFF;
        await File.WriteAllBytesAsync(shard, damaged);
        var actual = (await deployment.Artifacts.DescribeAsync(dataset.Path)).Sha256;
        deployment.StartWorker(Roles.TeacherTrajectories);

        var failed = await deployment.WaitForEndAsync(runId);
        Assert.True(failed.State == RunState.Failed, Deployment.Describe(failed));
        var trajectories = Deployment.StageOf(failed, GenerateTrajectoriesStage.StageName);
        Assert.Equal(StageState.Failed, trajectories.State);
        foreach (var part in new[] { nameof(ArtifactCorruptException), dataset.Path, $"expected sha256 {dataset.Sha256}", $"got {actual}" })
        {
            Assert.Contains(part, failed.Error);
            Assert.Contains(part, trajectories.Error);
        }
        // refused before any lease: the corrupt dataset was never used
        Assert.DoesNotContain(await deployment.AttemptsAsync(failed), a => a.StageId == trajectories.Id);
        await using (var db = deployment.Db())
            Assert.False(await db.Artifacts.AnyAsync(a => a.RunId == runId && a.Kind == ArtifactKind.Trajectories));
        await deployment.WaitUntilAsync(() => Task.FromResult(deployment.QueueDepths().GetValueOrDefault($"{Roles.TeacherTrajectories}_error") >= 1),
            "the refused command in the error queue");

        // repaired, the run resumes from the failed stage through the CLI
        await File.WriteAllBytesAsync(shard, original);
        output.WriteLine(await deployment.RunCliAsync("runs", "resume", runId.ToString()));
        await deployment.WaitForEndAsync(runId);
        await deployment.AssertCompleteAsync(runId);
        var run = await deployment.RunAsync(runId);
        Assert.Null(run.Error);
        Assert.Equal(1, Deployment.StageOf(run, PrepareDatasetStage.StageName).Attempt);
        Assert.Equal(2, Deployment.StageOf(run, GenerateTrajectoriesStage.StageName).Attempt);
    }
}
