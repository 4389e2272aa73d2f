using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using HyperSd.Api;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd serve</c>: the API host. On the embedded default, with every worker role in one process on 127.0.0.1
/// (in-memory bus, SQLite and an artifact folder under --store-dir, as <c>hypersd run</c> uses); in a deployment
/// (--postgres and --rabbitmq, or their environment variables), the API alone beside the deployment's workers, on the
/// address --listen names.</summary>
public static class ServeCommand
{
    public static Command Create()
    {
        var port = new Option<int>("--port")
        {
            Description = "the port to listen on (0: any free one)", DefaultValueFactory = _ => 8080,
        };
        var listen = new Option<IPAddress>("--listen")
        {
            Description = "the address to listen on (a deployment's container: 0.0.0.0)", DefaultValueFactory = _ => IPAddress.Loopback,
            CustomParser = r => IPAddress.TryParse(r.Tokens.Single().Value, out var a) ? a
                : throw new ArgumentException($"--listen: expected an IP address, got '{r.Tokens.Single().Value}'"),
        };
        var command = new Command("serve", "the API host: with every worker role on the embedded store, or beside a deployment's workers")
        {
            port, listen, RunStore.StoreDirOption, RunStore.PostgresOption, RunStore.RabbitMqOption, RunCommand.VerboseOption,
        };
        command.SetAction(async (parse, ct) =>
        {
            var portNumber = parse.GetValue(port);
            if (portNumber is < 0 or > 65535) throw new ArgumentException($"--port: expected 0..65535, got {portNumber}");
            var store = RunStore.From(parse);
            if (store.Embedded != (store.Postgres is null))
                throw new ArgumentException("serve: a deployment needs both --postgres and --rabbitmq (or neither: the embedded store)");
            // no appsettings from the working directory: configuration is the environment (Api__Keys__0__Key, ...)
            var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
            // embedded: every role here; deployment: the API only (the workers and the orchestrator run in their own processes)
            // in a container, the image's health file (HyperSd__HealthFile) answers its probes as a worker's does
            store.Configure(builder, allRoles: store.Embedded, parse.GetValue(RunCommand.VerboseOption),
                o =>
                {
                    o.HealthFile = builder.Configuration["HyperSd:HealthFile"] is { Length: > 0 } file ? file : null;
                    // a deployment's orchestrator migrates the store; the API waits for it (HyperSd__MigrateOnStart=false)
                    if (builder.Configuration["HyperSd:MigrateOnStart"] is { Length: > 0 } migrate) o.MigrateOnStart = bool.Parse(migrate);
                });
            // data protection signs the pages' session cookies: its key ring beside the store, so a restart (or another
            // replica on the same volume) keeps sessions; its warnings about unencrypted keys are noise here
            builder.Services.AddDataProtection().PersistKeysToFileSystem(new DirectoryInfo(Path.Combine(store.StoreDir,
                "data-protection")));
            builder.Logging.AddFilter("Microsoft.AspNetCore.DataProtection", LogLevel.Error);
            builder.Services.AddHyperSdApi(ApiOptions.FromConfiguration(builder.Configuration.GetSection("Api")));
            var address = parse.GetValue(listen)!;
            builder.WebHost.UseUrls(
                $"http://{(address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{address}]" : address)}:{portNumber}");
            await using var app = builder.Build().MapHyperSdApi();
            await app.StartAsync(ct);
            var url = app.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>()
                .Addresses.First();
            Console.WriteLine($"url: {url.TrimEnd('/')}/");
            if (app.Services.GetRequiredService<ApiKeyBootstrap>().GeneratedAdminKey is { } key) Console.WriteLine($"admin key: {key}");
            Console.WriteLine(store.Embedded ? $"store: {store.StoreDir}" : "store: the deployment's PostgreSQL");
            try
            {
                await app.WaitForShutdownAsync(ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
            }
            await app.StopAsync(CancellationToken.None);
        });
        return command;
    }
}
