using HyperSd.Testing;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging.Abstractions;

namespace HyperSd.Services.Tests;

/// <summary>The orchestrator's run state machine on a real SQLite store, without a bus: each transition's returned
/// commands are what would be sent.</summary>
public sealed class RunLifecycleTests : IDisposable
{
    readonly TestStore store = new();
    readonly WorkerOptions options;
    readonly RunLifecycle machine;
    readonly DateTimeOffset t0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public RunLifecycleTests()
    {
        options = store.WorkerOptions(o =>
        {
            o.MaxAttempts = 3;
            o.RetryBackoff = TimeSpan.FromSeconds(10);
            o.DispatchTimeout = TimeSpan.FromSeconds(30);
            o.LeaseTimeout = TimeSpan.FromSeconds(60);
        });
        machine = new RunLifecycle(store, StageCatalogue.Default(), options, NullLogger<RunLifecycle>.Instance);
    }

    public void Dispose() => store.Dispose();

    /// <summary>The command, checked to be of <paramref name="kind"/>.</summary>
    static RunStage Command(string kind, RunStage command)
    {
        Assert.Equal(kind, command.Kind);
        return command;
    }

    /// <summary>k of a TSCD stage, from its stored settings.</summary>
    static int Segments(Stage stage) => ((SegmentStageSettings)StageCatalogue.Default().ReadSettings(stage)).Config.Segments;

    async Task<Guid> StartedRun()
    {
        var runId = await store.CreateRunAsync(TinyToy.Recipe(), options);
        var sent = await machine.StartAsync(runId, t0);
        var command = Command("prepare-dataset", Assert.Single(sent).Command);
        Assert.Equal(1, command.Attempt);
        return runId;
    }

    /// <summary>What a worker does on accepting a command: the stage goes Running under its lease.</summary>
    async Task Lease(Guid runId, string stageName, DateTimeOffset at)
    {
        await using var db = store.CreateDbContext();
        var stage = await db.Stages.SingleAsync(s => s.RunId == runId && s.Name == stageName);
        Assert.Equal(StageState.Dispatched, stage.State);
        stage.State = StageState.Running;
        stage.LeaseOwner = "w";
        stage.LeaseHeartbeatAt = at;
        stage.StartedAt = at;
        db.StageAttempts.Add(new StageAttempt { Id = Guid.NewGuid(), StageId = stage.Id, Attempt = stage.Attempt, Owner = "w", StartedAt = at });
        await db.SaveChangesAsync();
    }

    Task<IReadOnlyList<StageDispatch>> Complete(Guid runId, string stageName, ArtifactKind kind, DateTimeOffset at) =>
        Complete(runId, stageName, [kind], at);

    async Task<IReadOnlyList<StageDispatch>> Complete(Guid runId, string stageName, ArtifactKind[] kinds, DateTimeOffset at)
    {
        await Lease(runId, stageName, at);
        var stage = await store.StageAsync(runId, stageName);
        var outputs = new Guid[kinds.Length];
        for (int i = 0; i < kinds.Length; i++)
            outputs[i] = (await store.AddOutputAsync(stage, kinds[i], kinds[i].ToString().ToLowerInvariant())).Id;
        return await machine.StageCompletedAsync(new StageCompleted(runId, stage.Id, stage.Attempt, outputs), at);
    }

    [Fact]
    public async Task Start_plans_the_stages_and_dispatches_the_first()
    {
        var runId = await StartedRun();
        var run = await store.RunAsync(runId);
        Assert.Equal(RunState.Running, run.State);
        Assert.Equal(["dataset", "trajectories", "tscd-k2", "tscd-k1", "train-rewards", "refl-k1", "dmd-k1", "unified", "evaluate",
            "score-evaluation", "generate"],
            run.Stages.Select(s => s.Name));
        Assert.Equal(StageState.Dispatched, run.Stages[0].State);
        Assert.All(run.Stages.Skip(1), s => Assert.Equal(StageState.Pending, s.State));
        Assert.Equal(2, Segments(run.Stages[2]));
        Assert.Empty(await machine.StartAsync(runId, t0)); // a second StartRun changes nothing
    }

    [Fact]
    public async Task Completion_advances_with_the_outputs_as_inputs_and_the_last_stage_finishes_the_run()
    {
        var runId = await StartedRun();
        var sent = await Complete(runId, "dataset", ArtifactKind.Dataset, t0);
        var trajectories = Command("generate-trajectories", Assert.Single(sent).Command);
        Assert.Equal(Roles.TeacherTrajectories, sent[0].Role);
        var datasetArtifact = await ArtifactOf(runId, "dataset");
        Assert.Equal([datasetArtifact], trajectories.InputArtifactIds);

        sent = await Complete(runId, "trajectories", ArtifactKind.Trajectories, t0);
        var k2 = Command("train-segment-stage", Assert.Single(sent).Command);
        Assert.Equal(2, Segments(await store.StageAsync(runId, k2.Stage)));
        Assert.Single(k2.InputArtifactIds);
        sent = await Complete(runId, "tscd-k2", ArtifactKind.Lora, t0);
        var k1 = Command("train-segment-stage", Assert.Single(sent).Command);
        Assert.Equal([await ArtifactOf(runId, "trajectories"), await ArtifactOf(runId, "tscd-k2")], k1.InputArtifactIds);
        sent = await Complete(runId, "tscd-k1", ArtifactKind.Lora, t0);
        var rewards = Command("train-rewards", Assert.Single(sent).Command);
        Assert.Equal(Roles.RewardScorer, sent[0].Role);
        Assert.Empty(rewards.InputArtifactIds);
        sent = await Complete(runId, "train-rewards", ArtifactKind.RewardModels, t0);
        var refl = Command("refl", Assert.Single(sent).Command);
        Assert.Equal(Roles.RewardScorer, sent[0].Role);
        var rewardModels = await ArtifactOf(runId, "train-rewards");
        Assert.Equal([datasetArtifact, await ArtifactOf(runId, "tscd-k1"), rewardModels], refl.InputArtifactIds);
        sent = await Complete(runId, "refl-k1", ArtifactKind.Lora, t0);
        var dmd = Command("dmd", Assert.Single(sent).Command);
        Assert.Equal(Roles.DmdTrainer, sent[0].Role);
        Assert.Equal([datasetArtifact, await ArtifactOf(runId, "refl-k1")], dmd.InputArtifactIds);
        sent = await Complete(runId, "dmd-k1", ArtifactKind.Lora, t0);
        var merge = Command("merge-loras", Assert.Single(sent).Command);
        Assert.Equal(Roles.LoraMerger, sent[0].Role);
        // DMD's 1-step LoRA in place of the ReFL one it continued (itself in place of TSCD's)
        Assert.Equal([await ArtifactOf(runId, "tscd-k2"), await ArtifactOf(runId, "dmd-k1")], merge.InputArtifactIds);
        sent = await Complete(runId, "unified", ArtifactKind.Lora, t0);
        var evaluate = Command("evaluate-model", Assert.Single(sent).Command);
        Assert.Equal([await ArtifactOf(runId, "tscd-k2"), await ArtifactOf(runId, "tscd-k1"), await ArtifactOf(runId, "refl-k1"),
            await ArtifactOf(runId, "dmd-k1"), await ArtifactOf(runId, "unified")], evaluate.InputArtifactIds);
        sent = await Complete(runId, "evaluate", [ArtifactKind.Report, ArtifactKind.Images], t0);
        var score = Command("score-evaluation", Assert.Single(sent).Command);
        Assert.Equal(Roles.RewardScorer, sent[0].Role);
        await using (var db = store.CreateDbContext())
        {
            var evaluateId = (await store.StageAsync(runId, "evaluate")).Id;
            var samples = await db.Artifacts.Where(a => a.StageId == evaluateId && a.Kind == ArtifactKind.Images).Select(a => a.Id).SingleAsync();
            Assert.Equal([samples, rewardModels], score.InputArtifactIds);
        }
        sent = await Complete(runId, "score-evaluation", ArtifactKind.Report, t0);
        var generate = Command("generate-images", Assert.Single(sent).Command);
        Assert.Equal(Roles.Generator, sent[0].Role);
        // the unified LoRA (by its typed stage kind), for any step count
        Assert.Equal([await ArtifactOf(runId, "unified")], generate.InputArtifactIds);
        Assert.Empty(await Complete(runId, "generate", ArtifactKind.Images, t0));

        var run = await store.RunAsync(runId);
        Assert.Equal(RunState.Succeeded, run.State);
        Assert.All(run.Stages, s => Assert.Equal(StageState.Succeeded, s.State));
        Assert.NotNull(run.FinishedAt);
    }

    async Task<Guid> ArtifactOf(Guid runId, string stage)
    {
        await using var db = store.CreateDbContext();
        var id = (await store.StageAsync(runId, stage)).Id;
        return await db.Artifacts.Where(a => a.StageId == id).Select(a => a.Id).SingleAsync();
    }

    /// <summary>A stage that finished without what the next one reads fails the run, saying what is missing.</summary>
    [Fact]
    public async Task A_stage_whose_inputs_are_missing_fails_the_run_instead_of_being_dispatched()
    {
        var runId = await StartedRun();
        await Lease(runId, "dataset", t0);
        var stage = await store.StageAsync(runId, "dataset");
        Assert.Empty(await machine.StageCompletedAsync(new StageCompleted(runId, stage.Id, 1, []), t0));
        var run = await store.RunAsync(runId);
        Assert.Equal(RunState.Failed, run.State);
        var trajectories = run.Stages.Single(s => s.Name == "trajectories");
        Assert.Equal(StageState.Failed, trajectories.State);
        Assert.Contains("needs a 'dataset' artifact", trajectories.Error);
    }

    [Fact]
    public async Task A_duplicate_or_stale_completion_is_ignored()
    {
        var runId = await StartedRun();
        await Lease(runId, "dataset", t0);
        var stage = await store.StageAsync(runId, "dataset");
        var output = await store.AddOutputAsync(stage, ArtifactKind.Dataset, "dataset");
        var completed = new StageCompleted(runId, stage.Id, 1, [output.Id]);
        Assert.Single(await machine.StageCompletedAsync(completed, t0));
        Assert.Empty(await machine.StageCompletedAsync(completed, t0));
        Assert.Empty(await machine.StageCompletedAsync(completed with { Attempt = 7 }, t0));
        var trajectories = await store.StageAsync(runId, "trajectories");
        Assert.Equal(StageState.Dispatched, trajectories.State);
        Assert.Equal(1, trajectories.Attempt);
    }

    [Fact]
    public async Task A_transient_failure_retries_with_exponential_backoff_until_the_attempts_run_out()
    {
        var runId = await StartedRun();
        var now = t0;
        for (int attempt = 1; attempt <= 2; attempt++)
        {
            await Lease(runId, "dataset", now);
            var stage = await store.StageAsync(runId, "dataset");
            Assert.Empty(await machine.StageFailedAsync(new StageFailed(runId, stage.Id, attempt, "disk full", true), now));
            stage = await store.StageAsync(runId, "dataset");
            Assert.Equal(StageState.Pending, stage.State);
            var backoff = TimeSpan.FromSeconds(10 * (1 << (attempt - 1)));
            Assert.Equal(now + backoff, stage.NextAttemptAt);
            Assert.Empty(await machine.ReconcileAsync(now + backoff - TimeSpan.FromSeconds(1)));
            now += backoff;
            var retry = Command("prepare-dataset", Assert.Single(await machine.ReconcileAsync(now)).Command);
            Assert.Equal(attempt + 1, retry.Attempt);
        }
        await Lease(runId, "dataset", now);
        var last = await store.StageAsync(runId, "dataset");
        Assert.Empty(await machine.StageFailedAsync(new StageFailed(runId, last.Id, 3, "disk full", true), now));
        var run = await store.RunAsync(runId);
        Assert.Equal(RunState.Failed, run.State);
        Assert.Equal(StageState.Failed, run.Stages[0].State);
        Assert.Contains("disk full", run.Error);
    }

    [Fact]
    public async Task A_permanent_failure_fails_the_stage_and_the_run_with_the_error()
    {
        var runId = await StartedRun();
        await Lease(runId, "dataset", t0);
        var stage = await store.StageAsync(runId, "dataset");
        Assert.Empty(await machine.StageFailedAsync(new StageFailed(runId, stage.Id, 1, "ArgumentException: bad resolution", false), t0));
        var run = await store.RunAsync(runId);
        Assert.Equal(RunState.Failed, run.State);
        Assert.Equal(StageState.Failed, run.Stages[0].State);
        Assert.Equal("ArgumentException: bad resolution", run.Stages[0].Error);
        Assert.Contains("stage dataset: ArgumentException: bad resolution", run.Error);
        Assert.Empty(await machine.ReconcileAsync(t0 + TimeSpan.FromHours(1)));
    }

    [Fact]
    public async Task A_consumer_fault_fails_the_run_with_the_exception_message()
    {
        var runId = await StartedRun();
        var stage = await store.StageAsync(runId, "dataset");
        var command = new RunStage(runId, stage.Id, "dataset", "prepare-dataset", 1, []);
        Assert.Empty(await machine.StageFaultedAsync(command, "ArtifactCorruptException: Artifact 'x' is corrupt", t0));
        var run = await store.RunAsync(runId);
        Assert.Equal(RunState.Failed, run.State);
        Assert.Contains("is corrupt", run.Stages[0].Error);
    }

    [Fact]
    public async Task Cancel_stops_the_run_and_its_open_stages_and_later_events_are_ignored()
    {
        var runId = await StartedRun();
        await Lease(runId, "dataset", t0);
        Assert.Empty(await machine.CancelAsync(runId, "operator", t0));
        var run = await store.RunAsync(runId);
        Assert.Equal(RunState.Cancelled, run.State);
        Assert.All(run.Stages, s => Assert.Equal(StageState.Cancelled, s.State));
        var stage = run.Stages[0];
        Assert.Empty(await machine.StageCompletedAsync(new StageCompleted(runId, stage.Id, 1, []), t0));
        Assert.Empty(await machine.ReconcileAsync(t0 + TimeSpan.FromHours(1)));
        Assert.Equal(RunState.Cancelled, (await store.RunAsync(runId)).State);
    }

    [Fact]
    public async Task Resume_restarts_a_failed_run_at_the_failed_stage_with_the_next_attempt()
    {
        var runId = await StartedRun();
        await Complete(runId, "dataset", ArtifactKind.Dataset, t0);
        await Lease(runId, "trajectories", t0);
        var failed = await store.StageAsync(runId, "trajectories");
        await machine.StageFailedAsync(new StageFailed(runId, failed.Id, 1, "bad data", false), t0);
        Assert.Equal(RunState.Failed, (await store.RunAsync(runId)).State);

        var sent = await machine.ResumeAsync(runId, t0);
        var command = Command("generate-trajectories", Assert.Single(sent).Command);
        Assert.Equal(2, command.Attempt);
        Assert.Equal([await ArtifactOf(runId, "dataset")], command.InputArtifactIds);
        var run = await store.RunAsync(runId);
        Assert.Equal(RunState.Running, run.State);
        Assert.Null(run.Error);
        Assert.Equal(StageState.Succeeded, run.Stages[0].State);
        Assert.Equal(1, run.Stages[0].Attempt);
        Assert.Equal(StageState.Dispatched, run.Stages[1].State);
        Assert.Equal(1 + options.MaxAttempts, run.Stages[1].MaxAttempts); // a fresh budget: attempts 2, 3 and 4
        Assert.Empty(await machine.ResumeAsync(runId, t0)); // a running run does not resume
    }

    [Fact]
    public async Task Resume_restarts_a_cancelled_run()
    {
        var runId = await StartedRun();
        await machine.CancelAsync(runId, null, t0);
        var command = Command("prepare-dataset", Assert.Single(await machine.ResumeAsync(runId, t0)).Command);
        Assert.Equal(2, command.Attempt);
        Assert.All((await store.RunAsync(runId)).Stages.Skip(1), s => Assert.Equal(StageState.Pending, s.State));
    }

    [Fact]
    public async Task The_reconciler_sends_a_stuck_dispatched_stage_again_with_the_same_attempt()
    {
        var runId = await StartedRun();
        Assert.Empty(await machine.ReconcileAsync(t0 + TimeSpan.FromSeconds(29)));
        var again = Command("prepare-dataset", Assert.Single(await machine.ReconcileAsync(t0 + TimeSpan.FromSeconds(31))).Command);
        Assert.Equal(1, again.Attempt);
        var stage = await store.StageAsync(runId, "dataset");
        Assert.Equal(StageState.Dispatched, stage.State);
        Assert.Equal(t0 + TimeSpan.FromSeconds(31), stage.DispatchedAt);
        Assert.Empty(await machine.ReconcileAsync(t0 + TimeSpan.FromSeconds(32))); // not again until the timeout passes again
    }

    [Fact]
    public async Task The_reconciler_redispatches_a_running_stage_whose_heartbeat_stopped()
    {
        var runId = await StartedRun();
        await Lease(runId, "dataset", t0);
        Assert.Empty(await machine.ReconcileAsync(t0 + TimeSpan.FromSeconds(59)));
        var retry = Command("prepare-dataset", Assert.Single(await machine.ReconcileAsync(t0 + TimeSpan.FromSeconds(61))).Command);
        Assert.Equal(2, retry.Attempt);
        await using var db = store.CreateDbContext();
        var stage = await store.StageAsync(runId, "dataset");
        var attempt = await db.StageAttempts.SingleAsync(a => a.StageId == stage.Id && a.Attempt == 1);
        Assert.Equal(AttemptOutcome.Lost, attempt.Outcome);
        Assert.Equal(StageState.Dispatched, stage.State);
        // the old worker's late completion no longer counts
        Assert.Empty(await machine.StageCompletedAsync(new StageCompleted(runId, stage.Id, 1, []), t0 + TimeSpan.FromSeconds(62)));
    }

    /// <summary>Two chunks of a job completing at once each read the other still running, so neither finished the run: the
    /// reconciler finds every stage succeeded and nothing in flight, and finishes it; a healthy run beside it is left alone.
    /// </summary>
    [Fact]
    public async Task The_reconciler_finishes_a_run_whose_last_transitions_raced()
    {
        var raced = await StartedRun();
        var healthy = await StartedRun();
        await using (var db = store.CreateDbContext())
        {
            foreach (var stage in await db.Stages.Where(s => s.RunId == raced).ToListAsync())
                (stage.State, stage.LeaseOwner) = (StageState.Succeeded, null);
            await db.SaveChangesAsync();
        }
        Assert.Empty(await machine.ReconcileAsync(t0 + TimeSpan.FromSeconds(1)));
        await using var check = store.CreateDbContext();
        Assert.Equal(RunState.Succeeded, (await check.Runs.SingleAsync(r => r.Id == raced)).State);
        Assert.Equal(RunState.Running, (await check.Runs.SingleAsync(r => r.Id == healthy)).State);
        Assert.Equal(StageState.Dispatched,
            (await check.Stages.Where(s => s.RunId == healthy).OrderBy(s => s.Index).FirstAsync()).State);
    }

    [Fact]
    public async Task The_reconciler_completes_a_stage_whose_worker_finished_but_whose_event_never_came()
    {
        var runId = await StartedRun();
        await Lease(runId, "dataset", t0);
        var stage = await store.StageAsync(runId, "dataset");
        var output = await store.AddOutputAsync(stage, ArtifactKind.Dataset, "dataset");
        await using (var db = store.CreateDbContext())
        {
            var attempt = await db.StageAttempts.SingleAsync(a => a.StageId == stage.Id && a.Attempt == 1);
            attempt.Outcome = AttemptOutcome.Succeeded;
            attempt.FinishedAt = t0 + TimeSpan.FromSeconds(1);
            await db.SaveChangesAsync();
        }
        Assert.Empty(await machine.ReconcileAsync(t0 + TimeSpan.FromSeconds(59)));
        var next = Assert.Single(await machine.ReconcileAsync(t0 + TimeSpan.FromSeconds(61)));
        Assert.Equal([output.Id], Command("generate-trajectories", next.Command).InputArtifactIds);
        var done = await store.StageAsync(runId, "dataset");
        Assert.Equal((StageState.Succeeded, 1), (done.State, done.Attempt));
        // the event, when it comes, changes nothing
        Assert.Empty(await machine.StageCompletedAsync(new StageCompleted(runId, stage.Id, 1, [output.Id]), t0 + TimeSpan.FromSeconds(62)));
    }
}
