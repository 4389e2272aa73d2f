using System.CommandLine;
using HyperSd.Api;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd serve</c>: the API and every worker role in one process on 127.0.0.1 (the embedded default: in-memory
/// bus, SQLite and an artifact folder under --store-dir, as <c>hypersd run</c> uses).</summary>
public static class ServeCommand
{
    public static Command Create()
    {
        var port = new Option<int>("--port")
        {
            Description = "the loopback port to listen on (0: any free one)", DefaultValueFactory = _ => 8080,
        };
        var command = new Command("serve", "the API host with every worker role, on 127.0.0.1 (embedded store)")
        {
            port, RunStore.StoreDirOption, RunCommand.VerboseOption,
        };
        command.SetAction(async (parse, ct) =>
        {
            var portNumber = parse.GetValue(port);
            if (portNumber is < 0 or > 65535) throw new ArgumentException($"--port: expected 0..65535, got {portNumber}");
            var store = RunStore.From(parse) with { Postgres = null, RabbitMq = null };
            // no appsettings from the working directory: configuration is the environment (Api__Keys__0__Key, ...)
            var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
            store.Configure(builder, allRoles: true, parse.GetValue(RunCommand.VerboseOption));
            // authentication brings data protection, whose key ring API keys never use: its warnings are noise here
            builder.Logging.AddFilter("Microsoft.AspNetCore.DataProtection", LogLevel.Error);
            builder.Services.AddHyperSdApi(ApiOptions.FromConfiguration(builder.Configuration.GetSection("Api")));
            builder.WebHost.UseUrls($"http://127.0.0.1:{portNumber}");
            await using var app = builder.Build().MapHyperSdApi();
            await app.StartAsync(ct);
            var address = app.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>()
                .Addresses.First();
            Console.WriteLine($"url: {address.TrimEnd('/')}/");
            if (app.Services.GetRequiredService<ApiKeyBootstrap>().GeneratedAdminKey is { } key) Console.WriteLine($"admin key: {key}");
            Console.WriteLine($"store: {store.StoreDir}");
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
