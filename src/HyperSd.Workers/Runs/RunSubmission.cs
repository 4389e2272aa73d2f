using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Recipes;
using HyperSd.Workers.Hosting;
using MassTransit;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Workers.Runs;

/// <summary>Creates runs: validates the recipe, stores it with the run and its planned stages, and starts the run.</summary>
public sealed class RunSubmission(IDbContextFactory<MetadataDbContext> dbs, ISendEndpointProvider send, WorkerOptions options)
{
    /// <summary>Validates (an invalid recipe throws <see cref="RecipeValidationException"/> and writes nothing), stores,
    /// and sends <see cref="StartRun"/> to the orchestrator.</summary>
    public async Task<Guid> SubmitAsync(string recipePath, CancellationToken cancellationToken = default)
    {
        var yaml = await File.ReadAllTextAsync(recipePath, cancellationToken);
        var runId = await CreateAsync(yaml, recipePath, cancellationToken);
        var endpoint = await send.GetSendEndpoint(Roles.Queue(Roles.Orchestrator));
        await endpoint.Send(new StartRun(runId), cancellationToken);
        return runId;
    }

    /// <summary>Stores the recipe, a pending run and its stages in one transaction; returns the run id.</summary>
    public Task<Guid> CreateAsync(string yaml, string sourceName, CancellationToken cancellationToken = default) =>
        CreateAsync(dbs, yaml, sourceName, options.MaxAttempts, cancellationToken);

    /// <inheritdoc cref="CreateAsync(string, string, CancellationToken)"/>
    public static async Task<Guid> CreateAsync(IDbContextFactory<MetadataDbContext> dbs, string yaml, string sourceName, int maxAttempts,
        CancellationToken cancellationToken = default)
    {
        var recipe = RecipeLoader.Parse(yaml, sourceName);
        var now = DateTimeOffset.UtcNow;
        var stored = new Data.Entities.Recipe { Id = Guid.NewGuid(), Name = recipe.Name, Yaml = yaml, Sha256 = recipe.Sha256(), CreatedAt = now };
        var run = new Run { Id = Guid.NewGuid(), RecipeId = stored.Id, Name = recipe.Name, State = RunState.Pending, CreatedAt = now };
        run.Stages = RunPlan.Stages(recipe, run.Id, maxAttempts);
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        db.Recipes.Add(stored);
        db.Runs.Add(run);
        await db.SaveChangesAsync(cancellationToken);
        return run.Id;
    }
}
