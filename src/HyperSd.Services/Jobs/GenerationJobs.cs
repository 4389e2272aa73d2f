using System.IO.Compression;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.RewardScorer;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using MassTransit;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Jobs;

/// <summary>A job as listed: its run's state is its state; images done (kept: delivered) of the requested; the images made
/// (best-of-n: every candidate) of those to make, their rate since it started and the time left at that rate while they are
/// made; with a reward, the images scored (of those made) by its scoring stage.</summary>
public sealed record GenerationJobStatus(Guid Id, string Name, Guid RunId, string Model, RunState State, int ImagesDone, int ImageCount,
    int ChunksDone, int ChunkCount, double? ImagesPerSecond, TimeSpan? Eta, string OutputPath, string? Error, DateTimeOffset CreatedAt,
    DateTimeOffset? StartedAt, DateTimeOffset? FinishedAt, int BestOf = 1, int CandidatesDone = 0, int CandidateCount = 0,
    string? Reward = null, int? ImagesScored = null);

/// <summary>A candidate of a best-of-n image in the manifest: its index, seed and score.</summary>
public sealed record CandidateScore(int Candidate, long Seed, double? Score);

/// <summary>One line of a job's manifest.jsonl: one image the job delivers. A scored job adds its score and reward; a
/// best-of-n job which candidate was kept and every candidate's score (the kept one's included). Absent fields are left
/// out, so a job without a reward writes the lines it always did.</summary>
public sealed record ManifestLine(string Prompt, int PromptIndex, int ImageIndex, long Seed, string File, string Sha256,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? Score = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Reward = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] int? Candidate = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] IReadOnlyList<CandidateScore>? Candidates = null);

/// <summary>
/// Generation jobs in the application layer: submission (a validated plan stored as a job, its run and one generator
/// stage per chunk — and, with a reward, a scoring stage after them on the reward-scorer role — then started), status
/// with progress, cancel and resume (those of its run), and its results (the images it keeps) as a manifest and a zip,
/// streamed from the store.
/// </summary>
public sealed class GenerationJobs(IDbContextFactory<MetadataDbContext> dbs, ISendEndpointProvider send, RoleQueues queues,
    RunControl control, IArtifactStore artifacts, WorkerOptions options)
{
    public static readonly JsonSerializerOptions Json = new(StageCatalogue.Json);

    /// <summary>Where a job's images are, relative to the artifact root.</summary>
    public static string OutputPathOf(string name) => $"jobs/{name}";

    /// <summary>The spec with its LoRAs given as a run's resolved to their files (<see cref="RunLoras"/>).</summary>
    public async Task<GenerationJobSpec> ResolveAsync(GenerationJobSpec spec, CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        return await RunLoras.ResolveAsync(spec, db, artifacts, ct);
    }

    /// <summary>Stores the job with its run and chunk stages and starts the run; returns the job's id. A name in use is
    /// an <see cref="InvalidFieldException"/>.</summary>
    public async Task<Guid> SubmitAsync(GenerationJobPlan plan, CancellationToken ct = default)
    {
        var spec = plan.Spec;
        var specJson = JsonSerializer.Serialize(spec, Json);
        var now = DateTimeOffset.UtcNow;
        var recipe = new StoredRecipe
        {
            Id = Guid.NewGuid(), Name = plan.Name, Yaml = specJson, CreatedAt = now,
            Sha256 = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(specJson))),
        };
        var run = new Run { Id = Guid.NewGuid(), RecipeId = recipe.Id, Name = plan.Name, BaseModel = spec.Model,
            State = RunState.Pending, CreatedAt = now };
        var output = OutputPathOf(plan.Name);
        var job = new GenerationJob
        {
            Id = Guid.NewGuid(), RunId = run.Id, Name = plan.Name, Model = spec.Model, PromptCount = spec.Prompts.Count,
            ImageCount = plan.Images.Count, Steps = spec.Steps, OutputPath = output, SpecJson = specJson, CreatedAt = now,
            BestOf = spec.BestOf, Reward = spec.Scored ? spec.Reward : null,
        };
        var kind = new GenerateChunkStage();
        var chunks = plan.Chunks;
        job.ChunkCount = chunks.Count;
        var stages = chunks.Select((images, i) => ((IStageKind)kind,
            new PlannedStage(GenerateChunkStage.StageName(i), new GenerationChunkSettings(job.Id, plan.Model, spec.Loras,
                spec.SamplerSpec(), spec.Steps, spec.Width, spec.Height, spec.BatchSize, output, images, spec.Scored)))).ToList();
        // after every chunk (the orchestrator dispatches a non-concurrent stage once the chunks before it have succeeded)
        if (spec.Scored)
            stages.Add((new ScoreImagesStage(), new PlannedStage(ScoreImagesStage.StageName, new ScoreImagesSettings(job.Id,
                spec.Reward!, spec.RewardFiles, spec.BestOf, plan.Images.Count, spec.BatchSize))));
        run.Stages = StageCatalogue.Stages(run.Id, options.MaxAttempts, stages);

        await using (var db = await dbs.CreateDbContextAsync(ct))
        {
            if (await db.GenerationJobs.AnyAsync(j => j.Name == plan.Name, ct))
                throw new InvalidFieldException("name", $"a job named '{plan.Name}' exists");
            db.Recipes.Add(recipe);
            db.Runs.Add(run);
            db.GenerationJobs.Add(job);
            try
            {
                await db.SaveChangesAsync(ct);
            }
            catch (DbUpdateException e) when (UniqueViolation.Is(e))
            {
                throw new InvalidFieldException("name", $"a job named '{plan.Name}' exists");
            }
        }
        await (await send.GetSendEndpoint(queues.Address(Roles.Orchestrator))).Send(new StartRun(run.Id), ct);
        return job.Id;
    }

    /// <summary>Jobs, newest first.</summary>
    public async Task<IReadOnlyList<GenerationJobStatus>> ListAsync(CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var jobs = await db.GenerationJobs.AsNoTracking().OrderByDescending(j => j.CreatedAt).ThenBy(j => j.Id).ToListAsync(ct);
        var list = new List<GenerationJobStatus>();
        foreach (var job in jobs) list.Add(await StatusAsync(db, job, ct));
        return list;
    }

    /// <summary>The job with its progress; null if there is none.</summary>
    public async Task<GenerationJobStatus?> ShowAsync(Guid id, CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var job = await db.GenerationJobs.AsNoTracking().SingleOrDefaultAsync(j => j.Id == id, ct);
        return job is null ? null : await StatusAsync(db, job, ct);
    }

    static async Task<GenerationJobStatus> StatusAsync(MetadataDbContext db, GenerationJob job, CancellationToken ct)
    {
        var run = await db.Runs.AsNoTracking().SingleAsync(r => r.Id == job.RunId, ct);
        var images = db.GeneratedImages.Where(i => i.JobId == job.Id);
        int made = await images.CountAsync(ct), toMake = job.ImageCount * job.BestOf;
        // a job without a reward keeps each image as it is recorded; a scored one, the best of each image's candidates
        int done = await images.CountAsync(i => i.Kept, ct);
        int? scored = job.Reward is null ? null : await images.CountAsync(i => i.Score != null, ct);
        int chunksDone = await db.Stages.CountAsync(s => s.RunId == run.Id && s.Kind == GenerateChunkStage.KindName
                                                         && s.State == StageState.Succeeded, ct);
        double? rate = null;
        TimeSpan? eta = null;
        if (run.StartedAt is { } started)
        {
            var seconds = ((run.FinishedAt ?? await db.NowAsync(ct)) - started).TotalSeconds;
            if (seconds > 0 && made > 0)
            {
                rate = made / seconds;
                // the time left making images; a scored job's scoring (far cheaper per image) is shown by its count
                eta = run.State == RunState.Running && (made < toMake || job.Reward is null)
                    ? TimeSpan.FromSeconds((toMake - made) / rate.Value) : null;
            }
        }
        return new GenerationJobStatus(job.Id, job.Name, run.Id, job.Model, run.State, done, job.ImageCount, chunksDone, job.ChunkCount,
            rate, eta, job.OutputPath, run.Error, job.CreatedAt, run.StartedAt, run.FinishedAt, job.BestOf, made, toMake, job.Reward,
            scored);
    }

    /// <summary>Cancels the job's run: its chunks stop at their next heartbeat; what is recorded stays.</summary>
    public async Task<RunState?> CancelAsync(Guid id, CancellationToken ct = default) =>
        await RunOf(id, ct) is { } run ? await control.CancelAsync(run, "cancelled", ct) : null;

    /// <summary>Resumes a cancelled or failed job: its unfinished chunks are dispatched again and skip what is recorded.</summary>
    public async Task<RunState?> ResumeAsync(Guid id, CancellationToken ct = default) =>
        await RunOf(id, ct) is { } run ? await control.ResumeAsync(run, ct) : null;

    async Task<Guid?> RunOf(Guid id, CancellationToken ct)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        return await db.GenerationJobs.Where(j => j.Id == id).Select(j => j.RunId).SingleOrDefaultAsync(ct);
    }

    /// <summary>The images the job keeps, in (prompt, image) order, read from the store a page at a time: every recorded
    /// image of a job without a reward; of a scored job, each requested image's kept candidate once its candidates are
    /// scored, with the candidates' scores.</summary>
    public async IAsyncEnumerable<(ManifestLine Line, string FullPath)> ImagesAsync(Guid id,
        [EnumeratorCancellation] CancellationToken ct = default)
    {
        await using var db = await dbs.CreateDbContextAsync(ct);
        var job = await db.GenerationJobs.AsNoTracking().SingleOrDefaultAsync(j => j.Id == id, ct)
                  ?? throw new UnknownIdException("id", id, "generation job");
        // a requested image's candidates are adjacent in this order: each group gives its kept one
        var group = new List<GeneratedImage>();
        await foreach (var image in db.GeneratedImages.AsNoTracking().Where(i => i.JobId == id)
                           .OrderBy(i => i.PromptIndex).ThenBy(i => i.ImageIndex).ThenBy(i => i.Candidate)
                           .AsAsyncEnumerable().WithCancellation(ct))
        {
            if (group.Count > 0 && (group[0].PromptIndex, group[0].ImageIndex) != (image.PromptIndex, image.ImageIndex))
            {
                if (Kept(job, group) is { } line) yield return line;
                group.Clear();
            }
            group.Add(image);
        }
        if (Kept(job, group) is { } last) yield return last;
    }

    /// <summary>The manifest line and file of a requested image's kept candidate (<paramref name="group"/>: its candidates);
    /// null while none is kept (a scored job's candidates not all scored yet).</summary>
    (ManifestLine, string)? Kept(GenerationJob job, List<GeneratedImage> group)
    {
        var image = group.FirstOrDefault(i => i.Kept);
        if (image is null) return null;
        var candidates = job.BestOf > 1 ? group.Select(i => new CandidateScore(i.Candidate, i.Seed, i.Score)).ToList() : null;
        return (new ManifestLine(image.Prompt, image.PromptIndex, image.ImageIndex, image.Seed, image.Path[(job.OutputPath.Length + 1)..],
            image.Sha256, image.Score, image.RewardName, job.BestOf > 1 ? image.Candidate : null, candidates),
            artifacts.GetFullPath(image.Path));
    }

    /// <summary>manifest.jsonl: one line per image the job keeps.</summary>
    public async Task WriteManifestAsync(Guid id, Stream output, CancellationToken ct = default)
    {
        await using var writer = new StreamWriter(output, new UTF8Encoding(false), leaveOpen: true);
        await foreach (var (line, _) in ImagesAsync(id, ct))
            await writer.WriteLineAsync(JsonSerializer.Serialize(line, Json).AsMemory(), ct);
    }

    /// <summary>A zip of the job's images and its manifest.jsonl, written as it is read (the output need not seek): the
    /// archive writes an entry at a time into a buffer that is then copied to the output asynchronously, so at most one
    /// image is held in memory (ZipArchive writes synchronously, which an HTTP response refuses).</summary>
    public async Task WriteZipAsync(Guid id, Stream output, CancellationToken ct = default)
    {
        var buffer = new EntryBuffer();
        var manifest = new StringBuilder();
        using (var zip = new ZipArchive(buffer, ZipArchiveMode.Create, leaveOpen: true))
        {
            await foreach (var (line, path) in ImagesAsync(id, ct))
            {
                // PNGs are compressed already
                using (var to = zip.CreateEntry(line.File, CompressionLevel.NoCompression).Open())
                await using (var from = File.OpenRead(path))
                    await from.CopyToAsync(to, ct);
                await buffer.DrainAsync(output, ct);
                manifest.AppendLine(JsonSerializer.Serialize(line, Json));
            }
            using (var m = zip.CreateEntry("manifest.jsonl").Open())
                m.Write(Encoding.UTF8.GetBytes(manifest.ToString()));
            await buffer.DrainAsync(output, ct);
        }
        // the central directory, written when the archive is disposed
        await buffer.DrainAsync(output, ct);
    }

    /// <summary>A write-only, non-seeking stream that keeps what is written until it is drained to another stream.</summary>
    sealed class EntryBuffer : Stream
    {
        readonly MemoryStream pending = new();
        long written;

        public async Task DrainAsync(Stream output, CancellationToken ct)
        {
            await output.WriteAsync(pending.GetBuffer().AsMemory(0, (int)pending.Length), ct);
            pending.SetLength(0);
        }

        public override void Write(byte[] buffer, int offset, int count)
        {
            pending.Write(buffer, offset, count);
            written += count;
        }

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => written;
        public override long Position { get => written; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }

    /// <summary>Copies the job's images into <paramref name="dir"/> with its manifest.jsonl, checking each file's sha256
    /// against its record.</summary>
    public async Task<int> DownloadAsync(Guid id, string dir, CancellationToken ct = default)
    {
        Directory.CreateDirectory(dir);
        var lines = new List<string>();
        await foreach (var (line, path) in ImagesAsync(id, ct))
        {
            var target = Path.Combine(dir, line.File);
            File.Copy(path, target, overwrite: true);
            var sha256 = await ContentHash.OfFileAsync(target, ct);
            if (sha256 != line.Sha256) throw new InvalidDataException($"{path}: sha256 {sha256}, recorded {line.Sha256}");
            lines.Add(JsonSerializer.Serialize(line, Json));
        }
        await File.WriteAllLinesAsync(Path.Combine(dir, "manifest.jsonl"), lines, ct);
        return lines.Count;
    }
}
