using HyperSd.Contracts;
using HyperSd.Data.Artifacts;
using HyperSd.Data.Entities;
using HyperSd.Diffusion.Images;
using HyperSd.Recipes;
using HyperSd.Services.Execution;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using Microsoft.EntityFrameworkCore;
using TorchSharp;

namespace HyperSd.Services.RewardScorer;

/// <summary>A generation job's scoring: the job, the reward (and its files at real scale), candidates per requested image,
/// the requested images' count, and images per forward pass (the job's batch size).</summary>
public sealed record ScoreImagesSettings(Guid JobId, string Reward, RewardsRecipe? RewardFiles, int BestOf, int Images, int BatchSize);

/// <summary>
/// A generation job's last stage on the reward-scorer role, planned when it asks for best-of-n or scores: loads the reward
/// model once, scores every recorded image for its prompt (each file checked against its recorded sha256 first), and stores
/// the score on the image's row; once every candidate of a requested image is scored, the best-scored one (the lowest
/// candidate of a tie) is kept and the others are not. Each batch's scores and choices are one fenced write, so a lost lease
/// records nothing of its batch; a new attempt scores only the images without a score (a redone stage changes nothing that
/// is scored), and the choices follow from the stored scores alone.
/// </summary>
public sealed class ScoreImagesStage : StageKind<ScoreImagesSettings>
{
    public const string Kind = "score-images";
    public const string StageName = "score-images";
    public override string Name => Kind;
    public override string Role => Roles.RewardScorer;

    /// <summary>Scoring comes from jobs (<see cref="Jobs.GenerationJobs"/>), never from a recipe.</summary>
    public override IEnumerable<PlannedStage> Plan(Recipe recipe, RecipeInputs inputs) => [];

    /// <summary>Unscored rows read per query: bounded memory however large the job.</summary>
    const int Page = 1024;

    protected override async Task ExecuteAsync(StageContext stage, ScoreImagesSettings s)
    {
        int total = s.Images * s.BestOf, scored;
        await using (var db = await stage.Db.CreateDbContextAsync(stage.Cancellation))
        {
            var rows = db.GeneratedImages.AsNoTracking().Where(g => g.JobId == s.JobId);
            int recorded = await rows.CountAsync(stage.Cancellation);
            // the chunks before this stage all succeeded: each recorded every image it makes
            if (recorded != total)
                throw new InvalidDataException($"job {s.JobId}: {recorded} images recorded, expected {s.Images} × best_of {s.BestOf}");
            scored = await rows.CountAsync(g => g.Score != null, stage.Cancellation);
        }
        void Report() => stage.Report(scored / (double)total, new { Scored = scored, Total = total, s.Reward });
        Report();
        if (scored < total)
        {
            using var rewards = RewardModels.Load(new Dictionary<string, double> { [s.Reward] = 1 }, s.RewardFiles, stage);
            List<GeneratedImage> page;
            while ((page = await UnscoredAsync(stage, s.JobId)).Count > 0)
            {
                foreach (var batch in page.Chunk(s.BatchSize))
                {
                    stage.Cancellation.ThrowIfCancellationRequested();
                    var scores = await ScoreAsync(stage, rewards, s.Reward, batch);
                    await stage.WriteFencedAsync(db => RecordAsync(db, s, batch, scores, stage.Cancellation));
                    scored += batch.Length;
                    Report();
                }
            }
        }
        await using var check = await stage.Db.CreateDbContextAsync(stage.Cancellation);
        int kept = await check.GeneratedImages.CountAsync(g => g.JobId == s.JobId && g.Kept, stage.Cancellation);
        if (kept != s.Images) throw new InvalidDataException($"job {s.JobId}: {kept} images kept, expected one of each of {s.Images}");
    }

    static async Task<List<GeneratedImage>> UnscoredAsync(StageContext stage, Guid job)
    {
        await using var db = await stage.Db.CreateDbContextAsync(stage.Cancellation);
        return await db.GeneratedImages.AsNoTracking().Where(g => g.JobId == job && g.Score == null)
            .OrderBy(g => g.PromptIndex).ThenBy(g => g.ImageIndex).ThenBy(g => g.Candidate).Take(Page).ToListAsync(stage.Cancellation);
    }

    /// <summary>The batch's scores, each finite (a NaN would read back as "not scored" where the store keeps it as NULL).</summary>
    static async Task<double[]> ScoreAsync(StageContext stage, RewardModels rewards, string reward, GeneratedImage[] batch)
    {
        var paths = batch.Select(i => stage.Store.GetFullPath(i.Path)).ToList();
        for (int k = 0; k < batch.Length; k++)
        {
            var sha256 = await ContentHash.OfFileAsync(paths[k], stage.Cancellation);
            if (sha256 != batch[k].Sha256) throw new InvalidDataException($"{batch[k].Path}: sha256 {sha256}, recorded {batch[k].Sha256}");
        }
        var values = Score(rewards, batch.Select(i => i.Prompt).ToList(), paths, stage.Device);
        for (int k = 0; k < batch.Length; k++)
            if (!double.IsFinite(values[k]))
                throw new InvalidDataException($"{batch[k].Path}: the {reward} reward gave {values[k]} for '{batch[k].Prompt}'");
        return values;
    }

    // synchronous: a dispose scope belongs to its thread
    internal static double[] Score(RewardModels rewards, IReadOnlyList<string> prompts, IReadOnlyList<string> paths, string device)
    {
        using var scope = torch.NewDisposeScope();
        var images = torch.stack(paths.Select(ImageFiles.LoadRgb).ToArray()).to(torch.device(device));
        return rewards.Reward.Score(prompts, images).to(torch.ScalarType.Float64).cpu().data<double>().ToArray();
    }

    /// <summary>Stores the batch's scores (an image scored already keeps its score) and keeps the best candidate of each of
    /// the batch's requested images whose candidates are all scored.</summary>
    static async Task<int> RecordAsync(Data.MetadataDbContext db, ScoreImagesSettings s, GeneratedImage[] batch, double[] scores,
        CancellationToken ct)
    {
        var groups = batch.Select(i => (i.PromptIndex, i.ImageIndex)).ToHashSet();
        var prompts = groups.Select(g => g.PromptIndex).Distinct().ToList();
        var indices = groups.Select(g => g.ImageIndex).Distinct().ToList();
        var rows = (await db.GeneratedImages.Where(g => g.JobId == s.JobId && prompts.Contains(g.PromptIndex)
                && indices.Contains(g.ImageIndex)).ToListAsync(ct))
            .Where(g => groups.Contains((g.PromptIndex, g.ImageIndex))).ToList();
        var byId = rows.ToDictionary(r => r.Id);
        for (int k = 0; k < batch.Length; k++)
        {
            var row = byId[batch[k].Id];
            if (row.Score is not null) continue;
            row.Score = scores[k];
            row.RewardName = s.Reward;
        }
        foreach (var group in rows.GroupBy(r => (r.PromptIndex, r.ImageIndex)))
        {
            if (group.Count() != s.BestOf)
                throw new InvalidDataException($"job {s.JobId}: image {group.Key} has {group.Count()} candidates, expected {s.BestOf}");
            if (group.Any(r => r.Score is null)) continue;
            var best = group.OrderByDescending(r => r.Score).ThenBy(r => r.Candidate).First();
            foreach (var row in group) row.Kept = row == best;
        }
        return 0;
    }
}
