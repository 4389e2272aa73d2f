using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Services.Execution;
using HyperSd.Services.Orchestrator;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace HyperSd.Services.Hosting;

public static class WorkerServiceCollectionExtensions
{
    /// <summary>The metadata store, the artifact store, the bus on the chosen transport, and the consumers of
    /// <see cref="WorkerOptions.Roles"/>, each role on its own queue. With no roles: a client that submits runs
    /// (<see cref="RunSubmission"/>) and sends run commands. <paramref name="catalogue"/>: the stage kinds (default: the
    /// built-in ones); every process of a deployment must use the same.</summary>
    public static IServiceCollection AddHyperSdWorkers(
        this IServiceCollection services, WorkerOptions options, StageCatalogue? catalogue = null)
    {
        catalogue ??= StageCatalogue.Default();
        options.Validate(catalogue);
        services.AddSingleton(options);
        services.AddSingleton(catalogue);
        services.AddDbContextFactory<MetadataDbContext>(b => b.UseMetadataStore(options.Store));
        services.AddSingleton<IArtifactStore>(_ => new FileSystemArtifactStore(options.ArtifactRoot));
        services.AddSingleton<RunSubmission>();
        services.AddSingleton<RunLifecycle>();
        services.AddSingleton<RunControl>();
        services.AddSingleton<HyperSd.Services.Schedules.ScheduleService>();
        services.AddSingleton<StageLeases>();
        services.AddSingleton<DeviceSlots>();
        if (options.MigrateOnStart) services.AddHostedService<StoreMigration>();
        // before the bus starts: the roles' queues exist, declared alike, before anything is sent to them
        services.AddSingleton<RoleQueues>();
        services.AddHostedService(sp => sp.GetRequiredService<RoleQueues>());
        services.AddSingleton<StageRuntime>();
        services.AddHostedService(sp => sp.GetRequiredService<StageRuntime>());
        if (options.Serves(Roles.Orchestrator)) services.AddHostedService<StageReconciler>();
        if (options.HealthFile is not null) services.AddHostedService<WorkerHealth>();
        services.AddOptions<MassTransitHostOptions>().Configure(o =>
        {
            o.WaitUntilStarted = true;
            o.StopTimeout = TimeSpan.FromSeconds(30);
        });

        services.AddMassTransit(x =>
        {
            // MassTransit reports usage to its vendor by default; workers make no outside calls.
            x.DisableUsageTelemetry();
            if (options.Serves(Roles.Orchestrator))
            {
                x.AddConsumer<RunCommandsConsumer>();
                x.AddConsumer<StageEventsConsumer>();
                x.AddConsumer<StageFaultsConsumer>();
            }

            if (options.Transport == WorkerOptions.RabbitMqTransport)
                x.UsingRabbitMq((context, cfg) =>
                {
                    var r = options.RabbitMq;
                    cfg.Host(r.Host, r.Port, r.VirtualHost, h =>
                    {
                        h.Username(r.Username);
                        h.Password(r.Password);
                    });
                    context.GetRequiredService<RoleQueues>().ConfigureBus(cfg);
                    ConfigureEndpoints(context, cfg, options, catalogue);
                });
            else
                x.UsingInMemory((context, cfg) => ConfigureEndpoints(context, cfg, options, catalogue));
        });
        return services;
    }

    /// <summary>Each role's queue: classic or quorum as <see cref="RoleQueues"/> declares it.</summary>
    static void ConfigureEndpoints(
        IBusRegistrationContext context, IBusFactoryConfigurator cfg, WorkerOptions options, StageCatalogue catalogue)
    {
        var queues = context.GetRequiredService<RoleQueues>();
        if (options.Serves(Roles.Orchestrator))
            cfg.ReceiveEndpoint(Roles.Orchestrator, e =>
            {
                queues.ConfigureReceiveEndpoint(e);
                // Two transitions of one run raced on a stage's version, or the store was briefly unreachable: run the
                // message again on fresh state (in process: no delayed-delivery plugin needed).
                e.UseMessageRetry(r =>
                {
                    r.Handle<Exception>(x => x is DbUpdateException || StoreRetry.IsTransient(x));
                    r.Intervals(50, 200, 500, 1000, 2000, 5000, 10000);
                });
                e.ConfigureConsumer<RunCommandsConsumer>(context);
                e.ConfigureConsumer<StageEventsConsumer>(context);
                e.ConfigureConsumer<StageFaultsConsumer>(context);
            });
        // every stage role's queue takes RunStage commands for the kinds of that role
        foreach (var role in catalogue.Roles.Where(r => r != Roles.Orchestrator && options.Serves(r)))
            cfg.ReceiveEndpoint(role, e =>
            {
                queues.ConfigureReceiveEndpoint(e);
                // Accepting is quick (the work runs in the background): one command at a time keeps leasing orderly.
                e.PrefetchCount = 1;
                e.ConcurrentMessageLimit = 1;
                // a store blip while accepting is retried with backoff before the command faults (and fails its stage)
                e.UseMessageRetry(r =>
                {
                    r.Handle<Exception>(StoreRetry.IsTransient);
                    r.Exponential(6, TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(10), TimeSpan.FromMilliseconds(500));
                });
                e.Consumer(() => new RunStageConsumer(context.GetRequiredService<StageRuntime>(), role));
            });
    }

    /// <summary>Traces of the bus (MassTransit's ActivitySource) and of stage work, exported to the console and/or
    /// OTLP only when <see cref="TelemetryOptions"/> asks for it.</summary>
    public static IServiceCollection AddHyperSdTelemetry(this IServiceCollection services, TelemetryOptions telemetry, string serviceName)
    {
        if (!telemetry.Console && string.IsNullOrWhiteSpace(telemetry.OtlpEndpoint)) return services;
        services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(serviceName))
            .WithTracing(t =>
            {
                t.AddSource("MassTransit", StageRuntime.Activities.Name);
                if (telemetry.Console) t.AddConsoleExporter();
                if (!string.IsNullOrWhiteSpace(telemetry.OtlpEndpoint))
                    t.AddOtlpExporter(o => o.Endpoint = new Uri(telemetry.OtlpEndpoint));
            });
        return services;
    }
}
