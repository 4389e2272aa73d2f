using System.Text.Json.Nodes;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Recipes;
using HyperSd.Services.DatasetPrep;
using HyperSd.Services.Hosting;
using HyperSd.Services.LoraMerger;
using HyperSd.Services.SegmentConsistency;
using HyperSd.Services.Stages;
using HyperSd.Services.TeacherTrajectories;
using HyperSd.Testing;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using static TorchSharp.torch;

namespace HyperSd.Services.Tests;

/// <summary>The lora-merger stage on the embedded default: a tiny run's TSCD LoRAs (k = 2 → 1, rank 4) merged into one
/// unified LoRA, which loads back and reproduces the weighted sum within the SVD error it reports; bad settings each a
/// clear error that loses nothing.</summary>
[Collection(nameof(TorchGlobalState))]
public sealed class MergeLorasStageTests : IDisposable
{
    readonly TestStore store = new();

    public void Dispose() => store.Dispose();

    /// <summary>The run's stages up to the merge (no evaluation or generation: the merge is what is tested).</summary>
    static StageCatalogue UpToTheMerge() => new StageCatalogue().Add(new PrepareDatasetStage()).Add(new GenerateTrajectoriesStage())
        .Add(new TrainSegmentStage()).Add(new MergeLorasStage());

    async Task<(Run Run, List<Artifact> Artifacts, string Teacher)> RunTinyAsync(string merge)
    {
        var catalogue = UpToTheMerge();
        var (teacher, _) = TinyToy.WriteModels(Path.Combine(store.Root, "models"));
        var options = store.TinyRunOptions(catalogue);
        using var host = TestHosts.Start(options, catalogue);
        var yaml = TinyToy.Recipe(teacher, merge: false, refl: false, dmd: false).Replace("evaluation:", merge + "\nevaluation:");
        var planned = Runs.RunSubmission.Plan(catalogue, yaml, "tiny", options);
        var runId = await host.Services.GetRequiredService<Runs.RunSubmission>().SubmitAsync(planned);
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(3);
        Run run;
        while ((run = await store.RunAsync(runId)).State is not (RunState.Succeeded or RunState.Failed or RunState.Cancelled))
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"run still {run.State}");
            await Task.Delay(200);
        }
        await host.StopAsync();
        await using var db = store.CreateDbContext();
        var artifacts = await db.Artifacts.AsNoTracking().Include(a => a.Inputs).Where(a => a.RunId == runId).ToListAsync();
        return (run, artifacts, teacher);
    }

    static string Describe(Run run) =>
        $"run {run.State}: {run.Error}\n" + string.Join("\n", run.Stages.Select(s => $"{s.Name} {s.State}#{s.Attempt}: {s.Error}"));

    [Fact]
    public async Task A_tiny_runs_loras_merge_into_a_unified_lora_that_loads_back_and_reproduces_the_weighted_sum()
    {
        var (run, artifacts, teacherDir) = await RunTinyAsync(
            "merge: {weights: {tscd-k2: 0.3, tscd-k1: 0.7}, rank: 4, formats: [kohya, peft], fuse: true}");
        Assert.True(run.State == RunState.Succeeded, Describe(run));
        var unifiedStage = run.Stages.Single(s => s.Name == MergeLorasStage.StageName);
        Assert.Equal((MergeLorasStage.Kind, "lora-merger"), (unifiedStage.Kind, unifiedStage.Role));
        string PathOf(Artifact a) => store.Artifacts.GetFullPath(a.Path);
        var tscd = run.Stages.Where(s => s.Kind == TrainSegmentStage.Kind)
            .Select(s => artifacts.Single(a => a.Kind == ArtifactKind.Lora && a.StageId == s.Id)).ToList();
        var unified = artifacts.Single(a => a.Kind == ArtifactKind.Lora && a.StageId == unifiedStage.Id);
        Assert.Equal((MergeLorasStage.Kind, (int?)null), (unified.StageKind, unified.Steps));
        Assert.Equal(tscd.Select(a => a.Id).Order(), unified.Inputs.Select(i => i.InputArtifactId).Order());

        // the report: every module's energy and discarded energy, and the totals
        var report = JsonNode.Parse(await File.ReadAllTextAsync(PathOf(
            artifacts.Single(a => a.Kind == ArtifactKind.Report && a.StageId == unifiedStage.Id))))!;
        Assert.Equal(["tscd-k2", "tscd-k1"], report["sources"]!.AsArray().Select(s => (string)s!["stage"]!));
        Assert.Equal([0.3, 0.7], report["sources"]!.AsArray().Select(s => (double)s!["weight"]!));
        var modules = report["modules"]!.AsArray();
        double discarded = (double)report["discarded_energy"]!;
        Assert.Equal(modules.Sum(m => (double)m!["discarded_energy"]!), discarded, 1e-9);
        Assert.True(discarded > 0, "two rank-4 LoRAs truncated to rank 4 discard energy");

        using var pipeline = StableDiffusionPipeline.FromPretrained(teacherDir, CPU, ScalarType.Float32);
        var unet = pipeline.Unet;
        var sources = tscd.Select(a => LoraFormats.Load(Path.Combine(PathOf(a), "lora.safetensors"), unet)).ToList();
        // through the pipeline's LoadLora (as `hypersd generate --lora` loads it) and through diffusers' PEFT key names
        var kohya = pipeline.LoadLora(Path.Combine(PathOf(unified), MergeLorasStage.KohyaFile), 1.0, "unified");
        var peftPath = Path.Combine(PathOf(unified), MergeLorasStage.PeftFile);
        Assert.All(SafeTensors.Load(peftPath).Keys, k => Assert.Matches(@"^unet\..+\.lora_[AB]\.weight$", k));
        var config = JsonNode.Parse(SafeTensors.ReadMetadata(peftPath)["lora_adapter_metadata"])!;
        Assert.Equal((4, 4.0), ((int)config["unet.r"]!, (double)config["unet.lora_alpha"]!));
        using var peft = LoraFormats.Load(peftPath, unet);
        try
        {
            Assert.Equal(modules.Count, kohya.Layers.Count);
            double total = 0;
            foreach (var module in modules)
            {
                var path = (string)module!["module"]!;
                using var exact = LoraMerge.WeightedDelta(sources, [0.3, 0.7], path);
                using var fromKohya = kohya.Layers[path].Delta().to(float64);
                using var fromPeft = peft.Layers[path].Delta().to(float64);
                double error = exact.sub(fromKohya).square().sum().item<double>();
                // by Eckart–Young the squared error is the discarded energy (up to the factors' float32 rounding)
                Assert.Equal((double)module["discarded_energy"]!, error, 1e-6 * (double)module["energy"]! + 1e-10);
                Assert.True(fromKohya.allclose(fromPeft, rtol: 0, atol: 1e-7), path);
                total += error;
            }
            Assert.Equal(discarded, total, 1e-6 * (double)report["energy"]!);

            // the fused UNet: the base weight plus the unified delta, in the diffusers layout
            var fused = artifacts.Single(a => a.Kind == ArtifactKind.Unet);
            Assert.True(File.Exists(Path.Combine(PathOf(fused), "config.json")));
            var weights = SafeTensors.Load(Path.Combine(PathOf(fused), "diffusion_pytorch_model.safetensors"));
            var first = (string)modules[0]!["module"]!;
            var base_ = unet.state_dict()[first + ".weight"];
            Assert.True(weights[first + ".weight"].allclose(base_ + kohya.Layers[first].Delta(), rtol: 1e-5, atol: 1e-6));
        }
        finally
        {
            foreach (var s in sources) s.Dispose();
        }
    }

    [Fact]
    public async Task A_rank_above_a_modules_maximum_fails_the_merge_naming_the_module_and_loses_nothing()
    {
        var (run, artifacts, _) = await RunTinyAsync("merge: {rank: 100000}");
        Assert.Equal(RunState.Failed, run.State);
        var merge = run.Stages.Single(s => s.Name == MergeLorasStage.StageName);
        Assert.Equal((StageState.Failed, 1), (merge.State, merge.Attempt)); // permanent: not retried
        Assert.Contains("target rank 100000 for module", merge.Error);
        Assert.Contains("so the rank must be in [1, ", merge.Error);
        // the stages before it and their LoRAs stand, whole; the merge stored nothing
        Assert.All(run.Stages.Where(s => s != merge), s => Assert.Equal(StageState.Succeeded, s.State));
        Assert.DoesNotContain(artifacts, a => a.StageId == merge.Id);
        foreach (var lora in artifacts.Where(a => a.Kind == ArtifactKind.Lora))
            await store.Artifacts.VerifyAsync(lora.Path, lora.Sha256);
        Assert.Equal(2, artifacts.Count(a => a.Kind == ArtifactKind.Lora));
    }

    /// <summary>Weights that do not name exactly the stages that make LoRAs are refused when the run is planned.</summary>
    [Theory]
    [InlineData("{tscd-k2: 1}", "missing: tscd-k1")]
    [InlineData("{tscd-k2: 0.5, tscd-k1: 0.5, tscd-k8: 1}", "no such stage: tscd-k8")]
    public void Weights_that_do_not_match_the_stages_are_refused_at_submission(string weights, string why)
    {
        var yaml = TinyToy.Recipe(merge: false, refl: false, dmd: false).Replace("evaluation:", $"merge: {{weights: {weights}}}\nevaluation:");
        var e = Assert.Throws<RecipeValidationException>(() => Runs.RunSubmission.Plan(StageCatalogue.Default(), yaml, "tiny.yaml", new WorkerOptions()));
        var problem = Assert.Single(e.Problems);
        Assert.Equal("merge.weights", problem.Field);
        Assert.Contains("expected: tscd-k2, tscd-k1", problem.Message);
        Assert.Contains(why, problem.Message);
    }

    [Fact]
    public void Without_a_merge_section_or_with_it_disabled_no_merge_is_planned()
    {
        foreach (var yaml in new[]
                 {
                     TinyToy.Recipe(merge: false, refl: false, dmd: false),
                     TinyToy.Recipe(merge: false, refl: false, dmd: false).Replace("evaluation:", "merge: {enabled: false}\nevaluation:"),
                 })
            Assert.DoesNotContain(Runs.RunSubmission.Plan(StageCatalogue.Default(), yaml, "tiny.yaml", new WorkerOptions()).Run.Stages,
                s => s.Kind == MergeLorasStage.Kind);
    }
}
