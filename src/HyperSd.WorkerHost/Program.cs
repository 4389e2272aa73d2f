using HyperSd.Services.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

// hypersd-worker: one worker process serving any subset of the roles. Settings come from appsettings.json, environment
// variables (HyperSd__Roles=...) and the command line, e.g.
//   hypersd-worker --roles orchestrator,evaluator --transport rabbitmq --rabbitmq amqp://guest:guest@localhost:5672/ \
//     --store-provider postgres --store "Host=...;Database=hypersd" --artifact-root /mnt/artifacts --devices cuda:0,cuda:1
var switches = new Dictionary<string, string>
{
    ["--roles"] = "HyperSd:Roles",
    ["--transport"] = "HyperSd:Transport",
    ["--rabbitmq"] = "HyperSd:RabbitMq",
    ["--store-provider"] = "HyperSd:Store:Provider",
    ["--store"] = "HyperSd:Store:ConnectionString",
    ["--artifact-root"] = "HyperSd:ArtifactRoot",
    ["--devices"] = "HyperSd:Devices",
    ["--worker-id"] = "HyperSd:WorkerId",
    ["--heartbeat-seconds"] = "HyperSd:HeartbeatSeconds",
    ["--lease-timeout-seconds"] = "HyperSd:LeaseTimeoutSeconds",
    ["--dispatch-timeout-seconds"] = "HyperSd:DispatchTimeoutSeconds",
    ["--reconcile-seconds"] = "HyperSd:ReconcileSeconds",
    ["--max-attempts"] = "HyperSd:MaxAttempts",
    ["--otlp"] = "HyperSd:Telemetry:OtlpEndpoint",
    ["--trace-console"] = "HyperSd:Telemetry:Console",
    ["--threads"] = "HyperSd:Threads",
    ["--health-file"] = "HyperSd:HealthFile",
};
var builder = Host.CreateApplicationBuilder();
builder.Configuration.AddCommandLine(args, switches);
var section = builder.Configuration.GetSection("HyperSd");
WorkerOptions options;
try
{
    options = WorkerOptions.FromConfiguration(section);
}
catch (Exception e) when (e is ArgumentException or FormatException)
{
    Console.Error.WriteLine($"hypersd-worker: error: {e.Message}");
    return 2;
}
if (options.TensorThreads is int threads) TorchSharp.torch.set_num_threads(threads);

builder.Logging.ClearProviders();
builder.Logging.AddSimpleConsole(o =>
{
    o.IncludeScopes = true; // every line of stage work carries "run … stage … attempt …"
    o.SingleLine = true;
    o.TimestampFormat = "HH:mm:ss ";
});
builder.Logging.AddFilter("Microsoft.EntityFrameworkCore", LogLevel.Warning);
builder.Services.AddHyperSdWorkers(options);
builder.Services.AddHyperSdTelemetry(options.Telemetry, "hypersd-worker");
var host = builder.Build();
host.Services.GetRequiredService<ILoggerFactory>().CreateLogger("hypersd-worker").LogInformation(
    "worker {WorkerId}: roles {Roles}, transport {Transport}, store {Provider}, artifacts {ArtifactRoot}, devices {Devices}",
    options.WorkerId, string.Join(",", options.Roles), options.Transport, options.Store.Provider, Path.GetFullPath(options.ArtifactRoot),
    string.Join(",", options.Devices));
if (HyperSd.Diffusion.NativeAllocator.Advice is { } advice) host.Services.GetRequiredService<ILoggerFactory>()
    .CreateLogger("hypersd-worker").LogWarning("{Advice}", advice);
await host.RunAsync();
return 0;
