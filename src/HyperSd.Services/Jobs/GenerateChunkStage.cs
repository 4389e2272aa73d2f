using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Distillation.Evaluation;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Generator;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using TorchSharp;

namespace HyperSd.Services.Jobs;

/// <summary>One chunk of a generation job: its images and everything they are made with, resolved at submission.
/// <see cref="Scored"/>: the job's scoring stage chooses the images it keeps (else every image is kept as it is recorded).</summary>
public sealed record GenerationChunkSettings(Guid JobId, ModelReference Model, IReadOnlyList<JobLora> Loras, SamplerSpec Sampler,
    int Steps, int Width, int Height, int BatchSize, string OutputPath, IReadOnlyList<JobImage> Images, bool Scored = false);

/// <summary>
/// A generation job's chunk, leased by a generator worker like any stage (heartbeats, fencing, re-dispatch when its
/// lease expires). Each image is written to the job's folder whole (a temporary file, then a rename) as a PNG with its
/// parameters, then recorded (job, prompt index, image index, candidate, seed, path, sha256) in a fenced write, a batch at a time.
/// An image already recorded is skipped, and a file already in place (renamed there by an attempt that lost its lease
/// before recording it) is recorded as it is, so a redone chunk loses at most the batch in flight; a batch with any
/// image missing is made whole, as planned, so that every attempt writes the same bytes.
/// Partial files of a killed attempt are in the chunk's temporary folder, removed when the chunk is redone.
/// </summary>
public sealed class GenerateChunkStage : StageKind<GenerationChunkSettings>
{
    public const string KindName = "generate-chunk";
    public override string Name => KindName;
    public override string Role => Roles.Generator;
    /// <summary>A job's chunks are independent: all are dispatched at once, for workers to compete for.</summary>
    public override bool Concurrent => true;

    /// <summary>Chunks come from jobs (<see cref="GenerationJobs"/>), never from a recipe.</summary>
    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs) => [];

    public static string StageName(int chunk) => $"chunk-{chunk:D5}";

    protected override async Task ExecuteAsync(StageContext stage, GenerationChunkSettings c)
    {
        var recorded = await RecordedAsync(stage.Db, c, stage.Cancellation);
        var todo = c.Images.Where(i => !recorded.Contains(Key(i))).ToList();
        int done = c.Images.Count - todo.Count;
        // where a chunk's time goes (model load, generation with the PNG writes, hashing and recording), for sizing chunks
        var times = new ChunkTimes();
        void Report() => stage.Report(done / (double)c.Images.Count, new
        {
            Images = done, Total = c.Images.Count, times.LoadSeconds, times.GenerateSeconds, times.RecordSeconds,
        });
        Report();
        var dir = stage.Store.GetFullPath(c.OutputPath);
        // PNGs are written here, then renamed into the job's folder; an attempt killed mid-write left its partial file
        // in this folder, which every attempt of the chunk starts by removing
        var temp = Path.Combine(dir, $".{stage.Stage}.tmp");
        if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        if (todo.Count == 0) return;
        var watch = System.Diagnostics.Stopwatch.StartNew();

        Directory.CreateDirectory(temp);
        // the weights are checked against the hash the images record (remembered by the worker across chunks)
        using var pipeline = await ImageModels.OpenRecordedAsync(c.Model, torch.device(stage.Device), torch.ScalarType.Float32,
            stage.Cancellation);
        foreach (var lora in c.Loras) pipeline.LoadLora(lora.Path!, lora.Scale, lora.Id ?? Path.GetFileNameWithoutExtension(lora.Path));
        pipeline.Scheduler = c.Sampler.Build(pipeline.Scheduler.Config);
        times.LoadSeconds = watch.Elapsed.TotalSeconds;
        // Every attempt makes the chunk's planned batches whole: a batch's size changes the model's floating-point
        // results in the last bits (batched matrix products), so a redone batch of fewer images could round a pixel
        // differently from the first attempt's bytes.
        foreach (var planned in c.Images.Chunk(c.BatchSize))
        {
            var batch = planned.Where(i => !recorded.Contains(Key(i))).ToArray();
            if (batch.Length == 0) continue;
            stage.Cancellation.ThrowIfCancellationRequested();
            watch.Restart();
            var missing = batch.Where(i => !File.Exists(Path.Combine(dir, i.File))).ToHashSet();
            if (missing.Count > 0)
            {
                using var result = pipeline.Generate(new GenerationRequest
                {
                    Prompts = planned.Select(i => i.Prompt).ToList(), NegativePrompts = planned.Select(i => i.NegativePrompt).ToList(),
                    Seeds = planned.Select(i => i.Seed).ToList(), Steps = c.Steps, GuidanceScale = c.Sampler.GuidanceScale,
                    Eta = c.Sampler.Eta, Height = c.Height, Width = c.Width, Model = c.Model,
                });
                for (int k = 0; k < planned.Length; k++)
                {
                    if (!missing.Contains(planned[k])) continue;
                    var written = Path.Combine(temp, planned[k].File);
                    ImageFiles.SavePng(result.Images[k], written, result.Parameters[k].ToPngText());
                    File.Move(written, Path.Combine(dir, planned[k].File), overwrite: true);
                }
            }
            times.GenerateSeconds += watch.Elapsed.TotalSeconds;
            watch.Restart();
            var rows = new List<GeneratedImage>();
            foreach (var image in batch)
                rows.Add(new GeneratedImage
                {
                    Id = Guid.NewGuid(), JobId = c.JobId, PromptIndex = image.PromptIndex, ImageIndex = image.ImageIndex,
                    Candidate = image.Candidate ?? 0, Prompt = image.Prompt, Kept = !c.Scored,
                    Seed = image.Seed, Path = $"{c.OutputPath}/{image.File}", StageId = stage.StageId, Attempt = stage.Attempt,
                    Sha256 = await ContentHash.OfFileAsync(Path.Combine(dir, image.File), stage.Cancellation),
                });
            done += batch.Length;
            await stage.WriteFencedAsync(async db =>
            {
                var now = await db.NowAsync(stage.Cancellation);
                var prompts = rows.Select(r => r.PromptIndex).Distinct().ToList();
                var there = (await db.GeneratedImages.Where(g => g.JobId == c.JobId && prompts.Contains(g.PromptIndex))
                    .Select(g => new { g.PromptIndex, g.ImageIndex, g.Candidate }).ToListAsync(stage.Cancellation))
                    .Select(g => (g.PromptIndex, g.ImageIndex, g.Candidate)).ToHashSet();
                foreach (var row in rows.Where(r => !there.Contains((r.PromptIndex, r.ImageIndex, r.Candidate))))
                {
                    row.CreatedAt = now;
                    db.GeneratedImages.Add(row);
                }
                return 0;
            });
            times.RecordSeconds += watch.Elapsed.TotalSeconds;
            Report();
        }
        Directory.Delete(temp, recursive: true);
    }

    sealed class ChunkTimes
    {
        public double LoadSeconds { get; set; }
        public double GenerateSeconds { get; set; }
        public double RecordSeconds { get; set; }
    }

    /// <summary>An image's row key: (prompt index, image index, candidate).</summary>
    static (int, int, int) Key(JobImage i) => (i.PromptIndex, i.ImageIndex, i.Candidate ?? 0);

    static async Task<HashSet<(int, int, int)>> RecordedAsync(IDbContextFactory<MetadataDbContext> dbs, GenerationChunkSettings c,
        CancellationToken ct)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var prompts = c.Images.Select(i => i.PromptIndex).Distinct().ToList();
        return (await db.GeneratedImages.AsNoTracking().Where(g => g.JobId == c.JobId && prompts.Contains(g.PromptIndex))
            .Select(g => new { g.PromptIndex, g.ImageIndex, g.Candidate }).ToListAsync(ct))
            .Select(g => (g.PromptIndex, g.ImageIndex, g.Candidate)).ToHashSet();
    }
}
