using System.Globalization;
using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Testing;
using HyperSd.Services.Hosting;
using HyperSd.Services.DatasetPrep;
using HyperSd.Services.Evaluator;
using HyperSd.Services.Execution;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using HyperSd.Services.TeacherTrajectories;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Integration.Tests;

/// <summary>Lease and retry timings of a test deployment: seconds, not the production minutes.</summary>
public sealed record Timings(double HeartbeatSeconds = 0.5, double LeaseTimeoutSeconds = 5, double DispatchTimeoutSeconds = 10,
    double ReconcileSeconds = 1, double RetryBackoffSeconds = 1);

/// <summary>
/// A deployment for one test: its own PostgreSQL database and RabbitMQ virtual host, an artifact folder, the tiny toy
/// models, <c>hypersd-worker</c> processes (one per role unless a test starts more), and an in-process client that
/// submits runs and sends messages the way the CLI does against a deployment.
/// </summary>
public sealed class Deployment : IAsyncDisposable
{
    readonly PostgresDatabase database = new();
    readonly RabbitMqVirtualHost virtualHost = new();
    readonly List<WorkerProcess> workers = [];
    readonly Timings timings;
    readonly IHost client;
    int workerCount;

    public string Root { get; } = Directory.CreateTempSubdirectory("hypersd-integration-").FullName;
    public string ArtifactRoot => Path.Combine(Root, "artifacts");
    public FileSystemArtifactStore Artifacts { get; }
    public string Teacher { get; }
    public string Recognizer { get; }
    /// <summary>The virtual host's address, with <c>?queue-type=quorum</c> for a deployment on quorum queues.</summary>
    public Uri RabbitMqUri { get; }
    public MetadataStoreOptions Store { get; }
    public IBus Bus => client.Services.GetRequiredService<IBus>();
    /// <summary>Generation jobs through this deployment's store and bus, as the CLI and the API host submit them.</summary>
    public HyperSd.Services.Jobs.GenerationJobs Jobs => client.Services.GetRequiredService<HyperSd.Services.Jobs.GenerationJobs>();

    /// <param name="quorum">Every role on a quorum queue, as deployments run (default: classic queues).</param>
    public Deployment(Timings? timings = null, bool quorum = false)
    {
        this.timings = timings ?? new Timings();
        RabbitMqUri = quorum
            ? new UriBuilder(virtualHost.Uri) { Query = $"{RabbitMqOptions.QueueTypeParameter}={RabbitMqOptions.QuorumQueues}" }.Uri
            : virtualHost.Uri;
        Store = new MetadataStoreOptions { Provider = MetadataStoreOptions.Postgres, ConnectionString = database.ConnectionString };
        Artifacts = new FileSystemArtifactStore(ArtifactRoot);
        (Teacher, Recognizer) = TinyToy.WriteModels(Path.Combine(Root, "models"));
        // No roles: it migrates the store, then only submits and sends.
        var options = new WorkerOptions
        {
            Roles = [], Transport = WorkerOptions.RabbitMqTransport, RabbitMq = RabbitMqOptions.FromUri(RabbitMqUri.ToString()), Store = Store,
            ArtifactRoot = ArtifactRoot, WorkerId = "test-client", Inputs = TestInputs.Temp,
        };
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(new FileLoggerProvider(Path.Combine(Root, "client.log")));
        builder.Logging.AddFilter("Microsoft.EntityFrameworkCore", LogLevel.Warning);
        builder.Services.AddHyperSdWorkers(options);
        client = builder.Build();
        try
        {
            client.Start();
        }
        catch
        {
            client.Dispose();
            database.Dispose();
            virtualHost.Dispose();
            throw;
        }
    }

    /// <summary>Starts a hypersd-worker process serving <paramref name="role"/>.</summary>
    public WorkerProcess StartWorker(string role)
    {
        var name = $"{role}-{Interlocked.Increment(ref workerCount)}";
        string S(double seconds) => seconds.ToString(CultureInfo.InvariantCulture);
        var args = new List<string>
        {
            "--roles", role, "--transport", WorkerOptions.RabbitMqTransport, "--rabbitmq", RabbitMqUri.ToString(),
            "--store-provider", MetadataStoreOptions.Postgres, "--store", database.ConnectionString, "--artifact-root", ArtifactRoot,
            "--worker-id", name, "--threads", "1",
            "--heartbeat-seconds", S(timings.HeartbeatSeconds), "--lease-timeout-seconds", S(timings.LeaseTimeoutSeconds),
            "--dispatch-timeout-seconds", S(timings.DispatchTimeoutSeconds), "--reconcile-seconds", S(timings.ReconcileSeconds),
        };
        var environment = new Dictionary<string, string>
        {
            ["HyperSd__ToyRecognizerDir"] = Recognizer,
            ["HyperSd__RetryBackoffSeconds"] = S(timings.RetryBackoffSeconds),
        };
        var worker = new WorkerProcess(name, args, environment, Path.Combine(Root, $"{name}.log"));
        lock (workers) workers.Add(worker);
        return worker;
    }

    /// <summary>One worker process per role (all roles when none are named), started together. Messages sent before a
    /// worker is up wait in its queue (a sender declares the queue too).</summary>
    public Dictionary<string, WorkerProcess> StartWorkers(params string[] roles) =>
        (roles.Length == 0 ? StageCatalogue.Default().Roles : roles).ToDictionary(r => r, StartWorker);

    /// <summary><see cref="StartWorkers"/>, returning once every worker serves its queue.</summary>
    public async Task<Dictionary<string, WorkerProcess>> StartWorkersAsync(params string[] roles)
    {
        var started = StartWorkers(roles);
        await Task.WhenAll(started.Values.Select(w => w.WaitStartedAsync(TimeSpan.FromMinutes(2))));
        return started;
    }

    /// <summary>SIGKILLs every worker process (their logs stay).</summary>
    public void KillWorkers()
    {
        lock (workers)
            foreach (var worker in workers) worker.Kill();
    }

    /// <summary>Stores the tiny recipe as a new run and sends StartRun to the orchestrator.</summary>
    /// <summary>Submits the tiny recipe, <paramref name="edit"/>ed if given.</summary>
    public async Task<Guid> SubmitAsync(int tscdSteps = 4, Func<string, string>? edit = null)
    {
        var path = Path.Combine(Root, $"tiny-{Guid.NewGuid():N}.yaml");
        var yaml = TinyToy.Recipe(Teacher, tscdSteps);
        await File.WriteAllTextAsync(path, edit is null ? yaml : edit(yaml));
        using var timeout = new CancellationTokenSource(SendTimeout);
        return await client.Services.GetRequiredService<RunSubmission>().SubmitAsync(path, timeout.Token);
    }

    public async Task SendAsync(string role, object message)
    {
        using var timeout = new CancellationTokenSource(SendTimeout);
        await (await Bus.GetSendEndpoint(client.Services.GetRequiredService<RoleQueues>().Address(role))).Send(message, timeout.Token);
    }

    /// <summary>MassTransit retries a failing send until cancelled; a test fails instead.</summary>
    static readonly TimeSpan SendTimeout = TimeSpan.FromMinutes(1);

    /// <summary>Runs the hypersd CLI against this deployment (its PostgreSQL and RabbitMQ) to completion.</summary>
    public Task<string> RunCliAsync(params string[] args) =>
        // --store-dir only names a scratch folder here: the store is the deployment's
        WorkerProcess.RunCliAsync(Root, [.. args, "--postgres", database.ConnectionString, "--rabbitmq", RabbitMqUri.ToString(),
            "--store-dir", Path.Combine(Root, "cli")]);

    /// <summary>Ready and unacknowledged messages per queue of this deployment's virtual host.</summary>
    public IReadOnlyDictionary<string, int> QueueDepths() => virtualHost.QueueDepths();

    /// <summary>Each queue's type (classic, quorum) in this deployment's virtual host.</summary>
    public IReadOnlyDictionary<string, string> QueueTypes() => virtualHost.QueueTypes();

    public MetadataDbContext Db() => MetadataStore.CreateContext(Store);

    public async Task<Run> RunAsync(Guid runId)
    {
        await using var db = Db();
        return await db.Runs.AsNoTracking().Include(r => r.Stages.OrderBy(s => s.Index)).SingleAsync(r => r.Id == runId);
    }

    /// <summary>Polls the store until <paramref name="condition"/> holds; on timeout, fails with the run's state and the
    /// workers' recent logs.</summary>
    public async Task<Run> WaitForAsync(Guid runId, Func<Run, bool> condition, string what, TimeSpan? timeout = null)
    {
        var limit = timeout ?? TimeSpan.FromMinutes(3);
        var deadline = DateTime.UtcNow + limit;
        while (true)
        {
            var run = await RunAsync(runId);
            if (condition(run)) return run;
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"waited {limit} for {what}; {Describe(run)}\n\n{WorkerLogs()}");
            await Task.Delay(100);
        }
    }

    /// <summary>Polls until <paramref name="condition"/> holds, or fails with the workers' recent logs.</summary>
    public async Task WaitUntilAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null)
    {
        var limit = timeout ?? TimeSpan.FromMinutes(3);
        var deadline = DateTime.UtcNow + limit;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"waited {limit} for {what}\n\n{WorkerLogs()}");
            await Task.Delay(100);
        }
    }

    public Task<Run> WaitForEndAsync(Guid runId, TimeSpan? timeout = null) =>
        WaitForAsync(runId, r => r.State is RunState.Succeeded or RunState.Failed or RunState.Cancelled, "the run to end", timeout);

    public static Stage StageOf(Run run, string name) => run.Stages.Single(s => s.Name == name);

    /// <summary>The run's state, each stage's and its error, for failure messages.</summary>
    public static string Describe(Run run) =>
        $"run {run.State}{(run.Error is null ? "" : $": {run.Error}")}\n" +
        string.Join("\n", run.Stages.Select(s => $"  {s.Name} {s.State} attempt {s.Attempt} {s.Progress:P0} {s.Error}"));

    /// <summary>The last lines of every worker's log.</summary>
    public string WorkerLogs(int lines = 25)
    {
        lock (workers)
            return string.Join("\n\n", workers.Select(w => $"== {w.Name} ({w.LogPath}) ==\n{w.Tail(lines)}"));
    }

    /// <summary>The command of a stage's current attempt, as the orchestrator builds it.</summary>
    public Task<RunStage> CurrentCommandAsync(Guid runId, string stageName) =>
        client.Services.GetRequiredService<RunLifecycle>().CurrentCommandAsync(runId, stageName);

    /// <summary>
    /// A finished toy run with nothing lost and nothing doubled: every stage succeeded; each output artifact of the
    /// succeeded attempts is in the store with the hash of its files; one dataset row; the evaluation rows of the teacher
    /// and the student, each once; an attempt row per lease, the last one succeeded.
    /// </summary>
    public async Task<List<Artifact>> AssertCompleteAsync(Guid runId)
    {
        var run = await RunAsync(runId);
        Assert.True(run.State == RunState.Succeeded, Describe(run) + "\n\n" + WorkerLogs());
        Assert.All(run.Stages, s => Assert.Equal(StageState.Succeeded, s.State));
        Assert.All(run.Stages, s => Assert.True(s.StartedAt >= s.DispatchedAt && s.FinishedAt >= s.StartedAt, s.Name));

        await using var db = Db();
        Assert.Equal("Npgsql.EntityFrameworkCore.PostgreSQL", db.Database.ProviderName);
        var artifacts = await db.Artifacts.AsNoTracking().Include(a => a.Inputs).Where(a => a.RunId == runId).ToListAsync();
        foreach (var artifact in artifacts)
            Assert.Equal(artifact.Sha256, (await Artifacts.DescribeAsync(artifact.Path)).Sha256);
        Assert.Equal(artifacts.Count, artifacts.Select(a => a.Path).Distinct().Count());

        var stages = run.Stages.ToDictionary(s => s.Id);
        var outputs = artifacts.Where(a => a.Kind != ArtifactKind.Checkpoint).ToList();
        // outputs come from the stage's succeeded attempt only
        Assert.All(outputs, a => Assert.Equal(stages[a.StageId!.Value].Attempt, a.Attempt));
        Assert.All(outputs, a => Assert.StartsWith(StageContext.OutputPrefix(runId, stages[a.StageId!.Value].Name, stages[a.StageId.Value].Attempt), a.Path));
        TinyToyRunAssertions.AssertOutputs(run, artifacts, await db.Datasets.AsNoTracking().SingleAsync(d => d.RunId == runId),
            await db.Evaluations.AsNoTracking().Where(v => v.RunId == runId).ToListAsync(), a => Artifacts.GetFullPath(a.Path));

        var attempts = await AttemptsAsync(run);
        foreach (var stage in run.Stages)
        {
            var mine = attempts.Where(a => a.StageId == stage.Id).ToList();
            Assert.Equal(mine.Count, mine.Select(a => a.Attempt).Distinct().Count());
            Assert.Equal(AttemptOutcome.Succeeded, mine.Single(a => a.Attempt == stage.Attempt).Outcome);
        }
        return artifacts;
    }

    public async Task<List<StageAttempt>> AttemptsAsync(Run run)
    {
        var ids = run.Stages.Select(s => s.Id).ToList();
        await using var db = Db();
        return await db.StageAttempts.AsNoTracking().Where(a => ids.Contains(a.StageId)).OrderBy(a => a.StartedAt).ToListAsync();
    }

    /// <summary>The entries the run's stages left in the artifact store (attempt outputs and checkpoints), relative paths.</summary>
    /// <summary>Asserts that every entry the run left in the artifact store is a recorded artifact and the reverse (no
    /// orphans, no temp files), naming the differences. Artifacts are files or folders (checkpoints); other folders
    /// (stages, attempts a&lt;n&gt;, checkpoints/) are walked, and an empty one counts as a stray entry.</summary>
    public void AssertStoredAreRecorded(Guid runId, IEnumerable<string> recorded)
    {
        var expected = recorded.Order().ToList();
        var stored = new List<string>();
        void Walk(string dir)
        {
            var entries = Directory.EnumerateFileSystemEntries(dir).ToList();
            if (entries.Count == 0) stored.Add(RelativeOf(dir));
            foreach (var entry in entries)
                if (Directory.Exists(entry) && !expected.Contains(RelativeOf(entry))) Walk(entry);
                else stored.Add(RelativeOf(entry));
        }
        Walk(Artifacts.GetFullPath($"runs/{runId:N}"));
        stored.Sort(StringComparer.Ordinal);
        expected.Sort(StringComparer.Ordinal);
        Assert.True(expected.SequenceEqual(stored),
            $"stored but not recorded: [{string.Join(", ", stored.Except(expected))}]; recorded but not stored: [{string.Join(", ", expected.Except(stored))}]");
    }

    string RelativeOf(string path) => Path.GetRelativePath(Artifacts.Root, path).Replace('\\', '/');

    public async ValueTask DisposeAsync()
    {
        lock (workers)
            foreach (var worker in workers) worker.Dispose();
        try { await client.StopAsync(TimeSpan.FromSeconds(10)); }
        finally { client.Dispose(); }
        database.Dispose();
        virtualHost.Dispose();
        // HYPERSD_KEEP_TEST_FILES=1 keeps the artifacts and worker logs for a look after the test.
        if (Environment.GetEnvironmentVariable("HYPERSD_KEEP_TEST_FILES") != "1")
            try { Directory.Delete(Root, true); } catch (IOException) { }
    }
}

/// <summary>The integration tests run one at a time: they share two cores, and one restarts the broker.</summary>
[CollectionDefinition(nameof(Integration), DisableParallelization = true)]
public sealed class Integration;
