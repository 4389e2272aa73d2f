using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Recipes;
using HyperSd.Services.Hosting;
using HyperSd.Services.Stages;
using MassTransit;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Runs;

/// <summary>A run resolved from its recipe and ready to store: the recipe as submitted, the run and its planned stages
/// with their typed settings.</summary>
public sealed record PlannedRun(StoredRecipe Recipe, Run Run);

/// <summary>Creates runs: parses and validates the recipe and resolves every stage's settings once (files the recipe names
/// are read here), then stores the recipe with the run and its planned stages, and starts the run.</summary>
public sealed class RunSubmission(IDbContextFactory<MetadataDbContext> dbs, ISendEndpointProvider send, StageCatalogue catalogue,
    WorkerOptions options, RoleQueues queues)
{
    /// <summary>Parses, validates and plans a recipe file; throws (<see cref="RecipeValidationException"/>, or an I/O error
    /// naming the file) and stores nothing when it cannot run.</summary>
    public static PlannedRun Plan(StageCatalogue catalogue, string recipePath, int maxAttempts)
    {
        if (!File.Exists(recipePath)) throw new FileNotFoundException($"no such recipe file: {recipePath}", recipePath);
        return Plan(catalogue, File.ReadAllText(recipePath), recipePath, maxAttempts);
    }

    /// <param name="sourceName">Names the recipe in error messages and in the stored recipe.</param>
    public static PlannedRun Plan(StageCatalogue catalogue, string yaml, string sourceName, int maxAttempts)
    {
        var recipe = RecipeLoader.Parse(yaml, sourceName);
        var now = DateTimeOffset.UtcNow;
        var stored = new StoredRecipe { Id = Guid.NewGuid(), Name = recipe.Name, Yaml = yaml, Sha256 = recipe.Sha256(), CreatedAt = now };
        var run = new Run
        {
            Id = Guid.NewGuid(), RecipeId = stored.Id, Name = recipe.Name, State = RunState.Pending, CreatedAt = now,
            BaseModel = recipe.Model.Path ?? recipe.Model.Source.ToString().ToLowerInvariant(),
        };
        try
        {
            run.Stages = catalogue.Plan(recipe, run.Id, maxAttempts);
        }
        catch (RecipeValidationException e)
        {
            // a problem found while resolving the settings: name the file, as the loader does
            throw new RecipeValidationException(sourceName, e.Problems);
        }
        return new PlannedRun(stored, run);
    }

    /// <summary>Plans, stores and sends <see cref="StartRun"/> to the orchestrator.</summary>
    public async Task<Guid> SubmitAsync(string recipePath, CancellationToken cancellationToken = default) =>
        await SubmitAsync(Plan(catalogue, recipePath, options.MaxAttempts), cancellationToken);

    /// <summary>Stores a planned run and sends <see cref="StartRun"/> to the orchestrator.</summary>
    public async Task<Guid> SubmitAsync(PlannedRun planned, CancellationToken cancellationToken = default)
    {
        await StoreAsync(dbs, planned, cancellationToken);
        var endpoint = await send.GetSendEndpoint(queues.Address(Roles.Orchestrator));
        await endpoint.Send(new StartRun(planned.Run.Id), cancellationToken);
        return planned.Run.Id;
    }

    /// <summary>Plans and stores a pending run (not started); returns its id.</summary>
    public async Task<Guid> CreateAsync(string yaml, string sourceName, CancellationToken cancellationToken = default)
    {
        var planned = Plan(catalogue, yaml, sourceName, options.MaxAttempts);
        await StoreAsync(dbs, planned, cancellationToken);
        return planned.Run.Id;
    }

    /// <summary>Stores the recipe, the pending run and its stages in one transaction.</summary>
    public static async Task StoreAsync(
        IDbContextFactory<MetadataDbContext> dbs, PlannedRun planned, CancellationToken cancellationToken = default)
    {
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        db.Recipes.Add(planned.Recipe);
        db.Runs.Add(planned.Run);
        await db.SaveChangesAsync(cancellationToken);
    }
}
