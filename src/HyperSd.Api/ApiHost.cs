using System.Text.Json;
using System.Text.Json.Serialization;
using Hangfire;
using Hangfire.InMemory;
using Hangfire.PostgreSql;
using HyperSd.Data;
using HyperSd.Services.Hosting;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.Routing;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;

namespace HyperSd.Api;

/// <summary>The API host: its services on top of the workers' (<see cref="WorkerServiceCollectionExtensions.AddHyperSdWorkers"/>),
/// and its pipeline: problem+json errors, API-key authentication, health, OpenAPI, <c>/api/runs</c> and <c>/api/evaluations</c>.</summary>
public static class ApiHost
{
    /// <summary>Mutations: operator or admin keys.</summary>
    public const string OperatePolicy = "operate";
    const string ReadyTag = "ready";

    /// <summary>Adds the API's services. Call after <c>AddHyperSdWorkers</c> (the store, the bus, and its migration, which
    /// must start before the key bootstrap reads the store).</summary>
    public static IServiceCollection AddHyperSdApi(this IServiceCollection services, ApiOptions options)
    {
        if (!services.Any(s => s.ServiceType == typeof(WorkerOptions)))
            throw new InvalidOperationException("AddHyperSdApi needs AddHyperSdWorkers first (the store and the bus)");
        options.Validate();
        services.AddSingleton(options);
        var ring = new ApiKeyRing();
        foreach (var (key, i) in options.Keys.Select((k, i) => (k, i)))
            ring.Add(key.Name is { Length: > 0 } name ? name : $"key #{i}", key.Role, key.Sha256 ?? ApiOptions.Hash(key.Key!));
        services.AddSingleton(ring);
        services.AddSingleton<ApiKeyBootstrap>();
        services.AddHostedService(sp => sp.GetRequiredService<ApiKeyBootstrap>());
        services.TryAddScoped(sp => sp.GetRequiredService<IDbContextFactory<MetadataDbContext>>().CreateDbContext());

        services.AddProblemDetails();
        services.AddExceptionHandler<ApiExceptionHandler>();
        // a query value that does not parse (limit=abc) throws, so the handler answers it as problem+json naming it
        services.Configure<RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
        services.Configure<JsonOptions>(o => o.SerializerOptions.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.CamelCase)));
        services.AddAuthentication(ApiKeyAuthenticationHandler.SchemeName)
            .AddScheme<AuthenticationSchemeOptions, ApiKeyAuthenticationHandler>(ApiKeyAuthenticationHandler.SchemeName, null);
        services.AddAuthorizationBuilder()
            // every endpoint needs a key unless it says otherwise (only the health checks do)
            .SetFallbackPolicy(new AuthorizationPolicyBuilder().RequireAuthenticatedUser().Build())
            .AddPolicy(OperatePolicy, p => p.RequireRole(ApiRoles.Operator, ApiRoles.Admin));
        // the bus's check is MassTransit's own ("masstransit-bus", tagged ready), registered by AddMassTransit
        services.AddHealthChecks().AddCheck<StoreHealthCheck>("store", tags: [ReadyTag]);
        services.AddOpenApi();
        AddScheduler(services, services.Single(s => s.ServiceType == typeof(WorkerOptions)).ImplementationInstance as WorkerOptions
            ?? throw new InvalidOperationException("WorkerOptions must be registered as an instance"));
        return services;
    }

    /// <summary>Hangfire for the schedules: its storage beside the metadata store (PostgreSQL in deployments, in memory on
    /// the embedded SQLite default), a server that runs the firings, and the recurring jobs kept in step with the store.
    /// The storage is this host's own service, not Hangfire's process-wide default.</summary>
    static void AddScheduler(IServiceCollection services, WorkerOptions workers)
    {
        // before the storage is made: its constructor asks Hangfire's static log provider for loggers already
        GlobalConfiguration.Configuration.UseLogProvider(HangfireLogs.Instance);
        services.AddHostedService<HangfireLogs.Attach>();
        var postgres = new PostgreSqlStorageOptions();
        JobStorage storage = workers.Store.Provider == MetadataStoreOptions.Postgres
            ? new PostgreSqlStorage(
                new Hangfire.PostgreSql.Factories.NpgsqlConnectionFactory(workers.Store.ConnectionString, postgres), postgres)
            : new InMemoryStorage();
        services.AddSingleton(storage);
        // AddHangfire points the static log provider at this host's logging; set it back to the one that outlives hosts
        services.AddHangfire(c => c.SetDataCompatibilityLevel(CompatibilityLevel.Version_180).UseSimpleAssemblyNameTypeSerializer()
            .UseRecommendedSerializerSettings().UseLogProvider(HangfireLogs.Instance));
        services.AddHangfireServer(o => o.WorkerCount = 1);
        services.AddSingleton<RecurringSchedules>();
        services.AddHostedService(sp => sp.GetRequiredService<RecurringSchedules>());
    }

    /// <summary>The middleware and endpoints.</summary>
    public static WebApplication MapHyperSdApi(this WebApplication app)
    {
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        app.UseAuthentication();
        app.UseAuthorization();
        // liveness: the process answers; readiness: the store and the bus do too
        app.MapHealthChecks("/health", new HealthCheckOptions { Predicate = _ => false }).AllowAnonymous();
        app.MapHealthChecks("/health/ready",
                new HealthCheckOptions { Predicate = c => c.Tags.Contains(ReadyTag), ResponseWriter = WriteHealth })
            .AllowAnonymous();
        app.MapOpenApi();
        var api = app.MapGroup("/api");
        RunsEndpoints.Map(api);
        EvaluationsEndpoints.Map(api);
        SchedulesEndpoints.Map(api);
        app.MapHangfireDashboard("/hangfire", new DashboardOptions
        {
            Authorization = [new DashboardKeyFilter()], IsReadOnlyFunc = DashboardKeyFilter.ReadOnly, AppPath = null,
        }).RequireAuthorization();
        return app;
    }

    /// <summary>Each check's status (no exception text: the readiness check answers anonymous callers).</summary>
    static Task WriteHealth(HttpContext context, HealthReport report)
    {
        context.Response.ContentType = "application/json";
        return context.Response.WriteAsJsonAsync(new
        {
            status = report.Status.ToString(),
            checks = report.Entries.ToDictionary(e => e.Key, e => new { status = e.Value.Status.ToString(), e.Value.Description }),
        });
    }

    sealed class StoreHealthCheck(IDbContextFactory<MetadataDbContext> dbs) : IHealthCheck
    {
        public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken ct = default)
        {
            await using var db = await dbs.CreateDbContextAsync(ct);
            return await db.Database.CanConnectAsync(ct)
                ? HealthCheckResult.Healthy("the metadata store answers")
                : HealthCheckResult.Unhealthy("the metadata store does not answer");
        }
    }
}
