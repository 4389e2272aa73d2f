using HyperSd.Testing;
using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Migrations;

namespace HyperSd.Data.Tests;

/// <summary>Migration BestOfScores on each provider: a job and an image stored before it read as a job of one candidate per
/// image and its kept, unscored image.</summary>
public abstract class BestOfMigrationTests
{
    protected abstract MetadataStoreOptions Options { get; }

    /// <summary>A timestamp as the provider's column holds it (SQLite: UTC ticks).</summary>
    protected abstract object Timestamp(DateTimeOffset t);

    [Fact]
    public async Task Images_stored_before_best_of_n_are_their_jobs_kept_images()
    {
        Guid job = Guid.NewGuid(), image = Guid.NewGuid();
        var now = Timestamp(new DateTimeOffset(2026, 12, 1, 0, 0, 0, TimeSpan.Zero));
        await using (var db = MetadataStore.CreateContext(Options))
        {
            await db.GetService<IMigrator>().MigrateAsync("EvaluationInterval");
            await db.Database.ExecuteSqlRawAsync(
                "INSERT INTO generation_jobs (id, name, model, prompt_count, image_count, chunk_count, steps, output_path, spec_json, " +
                "created_at) VALUES ({0}, 'old', 'toy', 1, 1, 1, 4, 'jobs/old', '{{}}', {1})", job, now);
            await db.Database.ExecuteSqlRawAsync(
                "INSERT INTO generated_images (id, job_id, prompt_index, image_index, prompt, seed, path, sha256, stage_id, attempt, " +
                "created_at) VALUES ({0}, {1}, 0, 0, 'a', 5, 'jobs/old/00000-0000.png', 'x', {2}, 1, {3})", image, job, Guid.NewGuid(), now);
        }
        await MetadataStore.MigrateAsync(Options);
        await using var check = MetadataStore.CreateContext(Options);
        var stored = await check.GenerationJobs.SingleAsync(j => j.Id == job);
        Assert.Equal((1, null), (stored.BestOf, stored.Reward));
        var row = await check.GeneratedImages.SingleAsync(i => i.Id == image);
        Assert.Equal((0, true, null, null), (row.Candidate, row.Kept, row.Score, row.RewardName));
    }
}

public sealed class SqliteBestOfMigrationTests : BestOfMigrationTests, IDisposable
{
    private readonly string file = Path.Combine(Path.GetTempPath(), $"hypersd-{Guid.NewGuid():N}.db");

    protected override MetadataStoreOptions Options => new() { Provider = "sqlite", ConnectionString = $"Data Source={file}" };

    protected override object Timestamp(DateTimeOffset t) => t.UtcTicks;

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        File.Delete(file);
    }
}

public sealed class PostgresBestOfMigrationTests(PostgresDatabase database) : BestOfMigrationTests, IClassFixture<PostgresDatabase>
{
    protected override MetadataStoreOptions Options => new() { Provider = "postgres", ConnectionString = database.ConnectionString };

    protected override object Timestamp(DateTimeOffset t) => t;
}
