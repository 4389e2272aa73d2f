using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.Json.Serialization;
using HyperSd.Data;
using HyperSd.Services.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace HyperSd.Api.Tests;

/// <summary>The API host on the embedded default (SQLite, in-memory bus, every worker role) on an in-process test server,
/// with an admin, an operator and a viewer key (the viewer's configured by its hash).</summary>
public sealed class ApiTestHost : IAsyncDisposable
{
    public const string AdminKey = "admin-key-0123456789abcdefghij";
    public const string OperatorKey = "operator-key-0123456789abcdefghij";
    public const string ViewerKey = "viewer-key-0123456789abcdefghij";

    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    public string Root { get; }
    public WebApplication App { get; }
    public WorkerOptions Workers { get; }
    readonly bool ownsRoot;

    ApiTestHost(string root, bool ownsRoot, WebApplication app, WorkerOptions workers)
    {
        Root = root;
        this.ownsRoot = ownsRoot;
        App = app;
        Workers = workers;
    }

    public static ApiOptions DefaultKeys() => new()
    {
        Keys =
        [
            new ApiKeyOptions { Name = "admin", Role = ApiRoles.Admin, Key = AdminKey },
            new ApiKeyOptions { Name = "operator", Role = ApiRoles.Operator, Key = OperatorKey },
            new ApiKeyOptions { Name = "viewer", Role = ApiRoles.Viewer, Sha256 = ApiOptions.Hash(ViewerKey) },
        ],
    };

    /// <param name="root">An existing store folder to start on again (kept on dispose); null = a new temporary one.</param>
    /// <param name="store">The metadata store; null = SQLite in the store folder.</param>
    public static async Task<ApiTestHost> StartAsync(ApiOptions? api = null, Action<WorkerOptions>? configure = null, string? root = null,
        MetadataStoreOptions? store = null)
    {
        var ownsRoot = root is null;
        root ??= Directory.CreateTempSubdirectory("hypersd-api-").FullName;
        var workers = new WorkerOptions
        {
            Store = store ?? new MetadataStoreOptions
            {
                Provider = MetadataStoreOptions.Sqlite, ConnectionString = $"Data Source={Path.Combine(root, "metadata.db")}",
            },
            ArtifactRoot = Path.Combine(root, "artifacts"),
            WorkerId = "api-test",
            HeartbeatInterval = TimeSpan.FromMilliseconds(500),
            ReconcileInterval = TimeSpan.FromSeconds(1),
        };
        configure?.Invoke(workers);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = root });
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddHyperSdWorkers(workers.Validate());
        builder.Services.AddHyperSdApi(api ?? DefaultKeys());
        var app = builder.Build().MapHyperSdApi();
        await app.StartAsync();
        return new ApiTestHost(root, ownsRoot, app, workers);
    }

    /// <summary>A client sending <paramref name="key"/> as a bearer token (or in X-Api-Key); none when null.</summary>
    public HttpClient Client(string? key, bool bearer = true)
    {
        var client = App.GetTestClient();
        if (key is null) return client;
        if (bearer) client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        else client.DefaultRequestHeaders.Add(ApiKeyAuthenticationHandler.HeaderName, key);
        return client;
    }

    public MetadataDbContext Db() => MetadataStore.CreateContext(Workers.Store);

    /// <summary>What the store holds, to show that a refused request stored nothing.</summary>
    public (int Recipes, int Runs, int Stages) Counts()
    {
        using var db = Db();
        return (db.Recipes.Count(), db.Runs.Count(), db.Stages.Count());
    }

    public async ValueTask DisposeAsync()
    {
        await App.StopAsync();
        await App.DisposeAsync();
        if (!ownsRoot) return;
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // a file still held by a finishing worker: the temp folder is left behind
        }
    }
}
