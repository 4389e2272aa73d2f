using HyperSd.Data.Entities;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage.ValueConversion;

namespace HyperSd.Data;

/// <summary>
/// The metadata store: runs, stages, artifacts, evaluations, generation jobs, schedules. Tables and columns are
/// snake_case; enums are stored as strings; timestamps are UTC. Configure it with
/// <see cref="MetadataStoreExtensions.UseMetadataStore"/>.
/// </summary>
public class MetadataDbContext(DbContextOptions<MetadataDbContext> options) : DbContext(options)
{
    public DbSet<StoredRecipe> Recipes => Set<StoredRecipe>();
    public DbSet<Run> Runs => Set<Run>();
    public DbSet<Stage> Stages => Set<Stage>();
    public DbSet<StageAttempt> StageAttempts => Set<StageAttempt>();
    public DbSet<Dataset> Datasets => Set<Dataset>();
    public DbSet<Artifact> Artifacts => Set<Artifact>();
    public DbSet<ArtifactInput> ArtifactInputs => Set<ArtifactInput>();
    public DbSet<Evaluation> Evaluations => Set<Evaluation>();
    public DbSet<EvaluationImageScore> EvaluationImageScores => Set<EvaluationImageScore>();
    public DbSet<GenerationJob> GenerationJobs => Set<GenerationJob>();
    public DbSet<GeneratedImage> GeneratedImages => Set<GeneratedImage>();
    public DbSet<Schedule> Schedules => Set<Schedule>();
    public DbSet<ApiKey> ApiKeys => Set<ApiKey>();

    protected override void OnConfiguring(DbContextOptionsBuilder optionsBuilder) =>
        optionsBuilder.UseSnakeCaseNamingConvention();

    protected override void ConfigureConventions(ModelConfigurationBuilder configuration)
    {
        configuration.Properties<RunState>().HaveConversion<string>();
        configuration.Properties<StageState>().HaveConversion<string>();
        configuration.Properties<AttemptOutcome>().HaveConversion<string>();
        configuration.Properties<ScheduleOverlap>().HaveConversion<string>();

        // SQLite stores DateTimeOffset as text and cannot compare or order it in queries ("lease expired?");
        // UTC ticks compare correctly. Postgres maps it to timestamptz natively.
        if (Database.IsSqlite())
        {
            configuration.Properties<DateTimeOffset>().HaveConversion<UtcTicksConverter>();
            configuration.Properties<DateTimeOffset?>().HaveConversion<UtcTicksConverter>();
        }
    }

    protected override void OnModelCreating(ModelBuilder model)
    {
        model.Entity<Run>(e =>
        {
            e.HasOne<StoredRecipe>().WithMany().HasForeignKey(r => r.RecipeId).OnDelete(DeleteBehavior.Restrict);
            e.HasMany(r => r.Stages).WithOne().HasForeignKey(s => s.RunId);
            e.HasIndex(r => r.State);
            // the run list's and the evaluation query's filters and order
            e.HasIndex(r => r.CreatedAt);
            e.HasIndex(r => r.Name);
            e.HasIndex(r => r.BaseModel);
            // a schedule's active runs (its overlap policy); deleting a schedule keeps its runs
            e.HasOne<Schedule>().WithMany().HasForeignKey(r => r.ScheduleId).OnDelete(DeleteBehavior.SetNull);
            e.HasIndex(r => new { r.ScheduleId, r.State });
        });
        model.Entity<Stage>(e =>
        {
            e.HasIndex(s => new { s.RunId, s.Name }).IsUnique();
            e.HasIndex(s => s.State);
            e.Property(s => s.Version).IsConcurrencyToken();
            e.HasMany(s => s.Attempts).WithOne().HasForeignKey(a => a.StageId);
            e.HasOne<Artifact>().WithMany().HasForeignKey(s => s.CheckpointArtifactId).OnDelete(DeleteBehavior.SetNull);
        });
        model.Entity<StageAttempt>().HasIndex(a => new { a.StageId, a.Attempt }).IsUnique();
        model.Entity<Dataset>(e =>
        {
            e.HasOne<Run>().WithMany().HasForeignKey(d => d.RunId);
            e.HasOne<Stage>().WithMany().HasForeignKey(d => d.StageId).OnDelete(DeleteBehavior.Restrict);
            e.HasOne<Artifact>().WithMany().HasForeignKey(d => d.ArtifactId).OnDelete(DeleteBehavior.Restrict);
        });
        model.Entity<Artifact>(e =>
        {
            e.HasIndex(a => a.Path).IsUnique();
            // stored as "lora", "dataset", ... (the names the column held before it was typed)
            e.Property(a => a.Kind).HasConversion(k => k.ToString().ToLowerInvariant(), v => Enum.Parse<ArtifactKind>(v, true));
            e.HasIndex(a => new { a.RunId, a.Kind });
            e.HasOne<Run>().WithMany().HasForeignKey(a => a.RunId).OnDelete(DeleteBehavior.SetNull);
            e.HasOne<Stage>().WithMany().HasForeignKey(a => a.StageId).OnDelete(DeleteBehavior.SetNull);
            e.HasMany(a => a.Inputs).WithOne().HasForeignKey(i => i.ArtifactId);
        });
        model.Entity<ArtifactInput>(e =>
        {
            e.HasKey(i => new { i.ArtifactId, i.InputArtifactId });
            // An artifact that others were made from cannot be deleted without breaking their lineage.
            e.HasOne<Artifact>().WithMany().HasForeignKey(i => i.InputArtifactId).OnDelete(DeleteBehavior.Restrict);
        });
        model.Entity<Evaluation>(e =>
        {
            e.HasIndex(v => new { v.RunId, v.Model, v.Sampler, v.Steps, v.Metric }).IsUnique();
            // the evaluation query's filters across runs (metric and steps together; sampler; date range)
            e.HasIndex(v => new { v.Metric, v.Steps });
            e.HasIndex(v => v.Sampler);
            e.HasIndex(v => v.CreatedAt);
            e.HasOne<Run>().WithMany().HasForeignKey(v => v.RunId);
            e.HasOne<Stage>().WithMany().HasForeignKey(v => v.StageId).OnDelete(DeleteBehavior.Restrict);
        });
        model.Entity<EvaluationImageScore>(e =>
        {
            // a redelivered or resumed scoring cannot score an image twice
            e.HasIndex(v => new { v.RunId, v.Model, v.Sampler, v.Steps, v.Reward, v.PromptIndex }).IsUnique();
            e.HasOne<Run>().WithMany().HasForeignKey(v => v.RunId);
            e.HasOne<Stage>().WithMany().HasForeignKey(v => v.StageId).OnDelete(DeleteBehavior.Restrict);
        });
        model.Entity<GenerationJob>(e =>
        {
            e.HasIndex(j => j.Name).IsUnique();
            e.HasIndex(j => j.RunId).IsUnique();
            e.HasOne<Run>().WithMany().HasForeignKey(j => j.RunId).OnDelete(DeleteBehavior.SetNull);
        });
        model.Entity<GeneratedImage>(e =>
        {
            // the exactly-once guarantee: a re-dispatched or redelivered chunk cannot record an image twice
            e.HasIndex(i => new { i.JobId, i.PromptIndex, i.ImageIndex, i.Candidate }).IsUnique();
            e.HasOne<GenerationJob>().WithMany().HasForeignKey(i => i.JobId).OnDelete(DeleteBehavior.Cascade);
        });
        model.Entity<Schedule>(e =>
        {
            e.HasIndex(s => s.Name).IsUnique();
            e.HasOne<StoredRecipe>().WithMany().HasForeignKey(s => s.RecipeId).OnDelete(DeleteBehavior.Restrict);
        });
        model.Entity<ApiKey>().HasIndex(k => k.Sha256).IsUnique();
    }

    public override int SaveChanges(bool acceptAllChangesOnSuccess)
    {
        Stamp();
        return base.SaveChanges(acceptAllChangesOnSuccess);
    }

    public override Task<int> SaveChangesAsync(bool acceptAllChangesOnSuccess, CancellationToken cancellationToken = default)
    {
        Stamp();
        return base.SaveChangesAsync(acceptAllChangesOnSuccess, cancellationToken);
    }

    /// <summary>Bumps concurrency versions and runs' updated_at before a save.</summary>
    private void Stamp()
    {
        var now = DateTimeOffset.UtcNow;
        foreach (var entry in ChangeTracker.Entries())
        {
            if (entry.State == EntityState.Modified && entry.Entity is IVersioned versioned)
                versioned.Version++;
            if (entry.State is EntityState.Added or EntityState.Modified && entry.Entity is Run run)
                run.UpdatedAt = now;
        }
    }

    private sealed class UtcTicksConverter() : ValueConverter<DateTimeOffset, long>(
        v => v.UtcTicks, v => new DateTimeOffset(v, TimeSpan.Zero));
}
