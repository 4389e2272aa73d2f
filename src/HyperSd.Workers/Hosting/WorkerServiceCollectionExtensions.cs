using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Workers.DatasetPrep;
using HyperSd.Workers.Evaluator;
using HyperSd.Workers.Generator;
using HyperSd.Workers.Execution;
using HyperSd.Workers.Orchestrator;
using HyperSd.Workers.Runs;
using HyperSd.Workers.SegmentConsistency;
using HyperSd.Workers.TeacherTrajectories;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace HyperSd.Workers.Hosting;

public static class WorkerServiceCollectionExtensions
{
    /// <summary>The metadata store, the artifact store, the bus on the chosen transport, and the consumers of
    /// <see cref="WorkerOptions.Roles"/>, each role on its own queue. With no roles: a client that submits runs
    /// (<see cref="RunSubmission"/>) and sends run commands.</summary>
    public static IServiceCollection AddHyperSdWorkers(this IServiceCollection services, WorkerOptions options)
    {
        options.Validate();
        services.AddSingleton(options);
        services.AddDbContextFactory<MetadataDbContext>(b => b.UseMetadataStore(options.Store));
        services.AddSingleton<IArtifactStore>(_ => new FileSystemArtifactStore(options.ArtifactRoot));
        services.AddSingleton<RunSubmission>();
        services.AddSingleton<RunStateMachine>();
        services.AddSingleton<StageLeases>();
        services.AddSingleton<DeviceSlots>();
        if (options.MigrateOnStart) services.AddHostedService<StoreMigration>();
        services.AddSingleton<StageRuntime>();
        services.AddHostedService(sp => sp.GetRequiredService<StageRuntime>());
        if (options.Serves(Roles.Orchestrator)) services.AddHostedService<StageReconciler>();
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
            if (options.Serves(Roles.DatasetPrep)) x.AddConsumer<PrepareDatasetConsumer>();
            if (options.Serves(Roles.TeacherTrajectories)) x.AddConsumer<GenerateTrajectoriesConsumer>();
            if (options.Serves(Roles.SegmentConsistency)) x.AddConsumer<TrainSegmentStageConsumer>();
            if (options.Serves(Roles.Evaluator)) x.AddConsumer<EvaluateModelConsumer>();
            if (options.Serves(Roles.Generator)) x.AddConsumer<GenerateImagesConsumer>();

            if (options.Transport == WorkerOptions.RabbitMqTransport)
                x.UsingRabbitMq((context, cfg) =>
                {
                    var r = options.RabbitMq;
                    cfg.Host(r.Host, r.Port, r.VirtualHost, h =>
                    {
                        h.Username(r.Username);
                        h.Password(r.Password);
                    });
                    ConfigureEndpoints(context, cfg, options);
                });
            else
                x.UsingInMemory((context, cfg) => ConfigureEndpoints(context, cfg, options));
        });
        return services;
    }

    /// <summary>Each role's queue. On RabbitMQ these are MassTransit's default classic durable queues: a sender to
    /// <c>queue:role</c> declares the queue too, without arguments, and the broker refuses (PRECONDITION_FAILED, the send
    /// retried forever) a declaration whose x-queue-type differs from the existing queue's, so quorum queues would need
    /// every sender configured alike.</summary>
    static void ConfigureEndpoints(IBusRegistrationContext context, IBusFactoryConfigurator cfg, WorkerOptions options)
    {
        if (options.Serves(Roles.Orchestrator))
            cfg.ReceiveEndpoint(Roles.Orchestrator, e =>
            {
                // Two transitions of one run raced on a stage's version: run the message again on fresh state.
                e.UseMessageRetry(r =>
                {
                    r.Handle<DbUpdateException>();
                    r.Intervals(50, 200, 500, 1000, 2000);
                });
                e.ConfigureConsumer<RunCommandsConsumer>(context);
                e.ConfigureConsumer<StageEventsConsumer>(context);
                e.ConfigureConsumer<StageFaultsConsumer>(context);
            });
        StageEndpoint<PrepareDatasetConsumer>(Roles.DatasetPrep);
        StageEndpoint<GenerateTrajectoriesConsumer>(Roles.TeacherTrajectories);
        StageEndpoint<TrainSegmentStageConsumer>(Roles.SegmentConsistency);
        StageEndpoint<EvaluateModelConsumer>(Roles.Evaluator);
        StageEndpoint<GenerateImagesConsumer>(Roles.Generator);

        void StageEndpoint<T>(string role) where T : class, IConsumer
        {
            if (!options.Serves(role)) return;
            cfg.ReceiveEndpoint(role, e =>
            {
                // Accepting is quick (the work runs in the background): one command at a time keeps leasing orderly.
                e.PrefetchCount = 1;
                e.ConcurrentMessageLimit = 1;
                e.ConfigureConsumer<T>(context);
            });
        }
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
                if (!string.IsNullOrWhiteSpace(telemetry.OtlpEndpoint)) t.AddOtlpExporter(o => o.Endpoint = new Uri(telemetry.OtlpEndpoint));
            });
        return services;
    }
}
