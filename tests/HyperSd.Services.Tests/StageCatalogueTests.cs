using System.Security.Cryptography;
using System.Text.Json;
using HyperSd.Contracts;
using HyperSd.Data.Entities;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Hosting;
using HyperSd.Services.Runs;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.Stages;
using HyperSd.Testing;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Services.Tests;

/// <summary>Settings of the test's own stage kind: what it resolved from the recipe at submission.</summary>
public sealed record LoraDigestSettings(string RecipeName, long Seed, int Prompts, bool FailFirstAttempt);

/// <summary>
/// A stage kind defined here, not in src/: on its own role, after every built-in stage, it reads the distilled LoRA
/// (chosen by typed metadata: the last TSCD stage's) and writes a report of the settings it ran with and the LoRA's
/// digest. <see cref="LoraDigestSettings.FailFirstAttempt"/> makes attempt 1 fail transiently, so the stage is re-dispatched.
/// </summary>
public sealed class LoraDigestStage : StageKind<LoraDigestSettings>
{
    public const string Role_ = "lora-digest";
    public override string Name => "digest-lora";
    public override string Role => Role_;
    public bool FailFirstAttempt { get; init; }

    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs) =>
        [new("digest", new LoraDigestSettings(recipe.Name, recipe.Seed, recipe.Evaluation.Prompts ?? 0, FailFirstAttempt))];

    protected override IEnumerable<Artifact> SelectInputs(LoraDigestSettings settings, IReadOnlyList<StageOutput> earlier) =>
        earlier.Where(o => o.Artifact.Kind == ArtifactKind.Lora && o.Artifact.StageKind == TrainSegmentStage.Kind).Select(o => o.Artifact).TakeLast(1);

    protected override async Task ExecuteAsync(StageContext stage, LoraDigestSettings settings)
    {
        if (settings.FailFirstAttempt && stage.Attempt == 1) throw new IOException("the first attempt fails (transient)");
        var lines = new List<string> { JsonSerializer.Serialize(settings, StageCatalogue.Json) };
        if (stage.OptionalInput(ArtifactKind.Lora) is { } lora)
        {
            var file = Path.Combine(stage.PathOf(lora), "lora.safetensors");
            lines.Add($"{lora.Segments} {Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(file)))}");
        }
        var report = Path.Combine(stage.WorkDir, $"a{stage.Attempt}.txt");
        await File.WriteAllLinesAsync(report, lines);
        await stage.AddOutputAsync(ArtifactKind.Report, report, "digest.txt");
    }
}

/// <summary>The stage catalogue: a stage kind added from outside src/ runs like the built-in ones, and a stage runs with
/// the settings stored for it at submission.</summary>
[Collection(nameof(TorchGlobalState))]
public sealed class StageCatalogueTests : IDisposable
{
    readonly TestStore store = new();

    public void Dispose() => store.Dispose();

    static IHost StartHost(WorkerOptions options, StageCatalogue catalogue) => TestHosts.Start(options, catalogue);

    static async Task<Run> WaitForEnd(TestStore store, Guid runId)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(3);
        while (true)
        {
            var run = await store.RunAsync(runId);
            if (run.State is RunState.Succeeded or RunState.Failed or RunState.Cancelled) return run;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"run still {run.State}");
            await Task.Delay(200);
        }
    }

    static string Describe(Run run) =>
        $"run {run.State}: {run.Error}\n" + string.Join("\n", run.Stages.Select(s => $"{s.Name} {s.State}#{s.Attempt}: {s.Error}"));

    [Fact]
    public async Task A_stage_kind_defined_outside_src_runs_in_a_whole_run_on_the_embedded_host()
    {
        var catalogue = StageCatalogue.Default().Add(new LoraDigestStage());
        var (teacher, recognizer) = TinyToy.WriteModels(Path.Combine(store.Root, "models"));
        var options = store.TinyRunOptions(catalogue, recognizer);
        Assert.Contains(LoraDigestStage.Role_, options.Roles);
        using var host = StartHost(options, catalogue);
        var planned = Runs.RunSubmission.Plan(catalogue, TinyToy.Recipe(teacher), "tiny", options);
        var runId = await host.Services.GetRequiredService<Runs.RunSubmission>().SubmitAsync(planned);
        var run = await WaitForEnd(store, runId);
        await host.StopAsync();

        Assert.True(run.State == RunState.Succeeded, Describe(run));
        var digest = run.Stages[^1];
        Assert.Equal(("digest", "digest-lora", LoraDigestStage.Role_), (digest.Name, digest.Kind, digest.Role));
        await using var db = store.CreateDbContext();
        var artifacts = await db.Artifacts.AsNoTracking().Include(a => a.Inputs).Where(a => a.RunId == runId).ToListAsync();
        var k1 = artifacts.Single(a => a is { Kind: ArtifactKind.Lora, Segments: 1, StageKind: TrainSegmentStage.Kind });
        var report = artifacts.Single(a => a.StageId == digest.Id);
        Assert.Equal([k1.Id], report.Inputs.Select(i => i.InputArtifactId));
        var lines = await File.ReadAllLinesAsync(store.Artifacts.GetFullPath(report.Path));
        var digestOfK1 = Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(
            Path.Combine(store.Artifacts.GetFullPath(k1.Path), "lora.safetensors"))));
        Assert.Equal($"1 {digestOfK1}", lines[1]);
    }

    [Fact]
    public async Task A_re_dispatched_stage_runs_with_its_stored_settings_whatever_the_stored_recipe_says_later()
    {
        // a catalogue of the test kind alone: the run is that one stage
        var catalogue = new StageCatalogue().Add(new LoraDigestStage { FailFirstAttempt = true });
        var options = store.WorkerOptions(o =>
        {
            o.Roles = [.. catalogue.Roles];
            o.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
            o.ReconcileInterval = TimeSpan.FromMilliseconds(500);
            o.RetryBackoff = TimeSpan.FromMilliseconds(200);
        }, catalogue);
        var planned = Runs.RunSubmission.Plan(catalogue, TinyToy.Recipe(), "tiny", options);
        await Runs.RunSubmission.StoreAsync(store, store.Artifacts, planned);
        var stored = planned.Run.Stages.Single().SettingsJson;

        // after submission, the stored recipe text is edited: another name, seed and prompt count
        await using (var db = store.CreateDbContext())
        {
            var recipe = await db.Recipes.SingleAsync(r => r.Id == planned.Recipe.Id);
            recipe.Yaml = recipe.Yaml.Replace("name: tiny", "name: edited").Replace("seed: 0", "seed: 99").Replace("prompts: 6", "prompts: 7");
            Assert.NotEqual(planned.Recipe.Yaml, recipe.Yaml);
            await db.SaveChangesAsync();
        }

        using var host = StartHost(options, catalogue);
        await (await host.Services.GetRequiredService<IBus>().GetSendEndpoint(Roles.Queue(Roles.Orchestrator))).Send(new StartRun(planned.Run.Id));
        var run = await WaitForEnd(store, planned.Run.Id);
        await host.StopAsync();

        Assert.True(run.State == RunState.Succeeded, Describe(run));
        var stage = run.Stages.Single();
        Assert.Equal(2, stage.Attempt); // attempt 1 failed transiently; attempt 2 was re-dispatched
        Assert.Equal(stored, stage.SettingsJson);
        await using var check = store.CreateDbContext();
        var report = await check.Artifacts.AsNoTracking().SingleAsync(a => a.StageId == stage.Id);
        var ran = JsonSerializer.Deserialize<LoraDigestSettings>((await File.ReadAllLinesAsync(store.Artifacts.GetFullPath(report.Path)))[0],
            StageCatalogue.Json);
        Assert.Equal(new LoraDigestSettings("tiny", 0, 6, true), ran);
        Assert.Equal(JsonSerializer.Deserialize<LoraDigestSettings>(stored, StageCatalogue.Json), ran);
    }
}
