using System.Net;
using System.Text.Json;
using HyperSd.Testing;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Api.Tests;

/// <summary>API keys: every endpoint but health needs one, mutations an operator or admin key, and a host with none
/// configured makes an admin key once, keeping only its hash.</summary>
public sealed class AuthTests
{
    static async Task AssertProblem(HttpResponseMessage response, HttpStatusCode status)
    {
        Assert.Equal(status, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    [Theory]
    [InlineData("/api/runs")]
    [InlineData("/api/evaluations")]
    [InlineData("/openapi/v1.json")]
    public async Task Anonymous_and_wrong_key_requests_get_401(string path)
    {
        await using var host = await ApiTestHost.StartAsync();
        await AssertProblem(await host.Client(null).GetAsync(path), HttpStatusCode.Unauthorized);
        await AssertProblem(await host.Client("not-a-key-0123456789abcdefghij").GetAsync(path), HttpStatusCode.Unauthorized);
        await AssertProblem(await host.Client("not-a-key-0123456789abcdefghij", bearer: false).GetAsync(path), HttpStatusCode.Unauthorized);
        Assert.Equal(HttpStatusCode.OK, (await host.Client(ApiTestHost.ViewerKey).GetAsync(path)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await host.Client(ApiTestHost.ViewerKey, bearer: false).GetAsync(path)).StatusCode);
    }

    [Fact]
    public async Task Health_is_anonymous_and_readiness_checks_the_store_and_the_bus()
    {
        await using var host = await ApiTestHost.StartAsync();
        Assert.Equal(HttpStatusCode.OK, (await host.Client(null).GetAsync("/health")).StatusCode);
        var ready = await host.Client(null).GetAsync("/health/ready");
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        using var body = JsonDocument.Parse(await ready.Content.ReadAsStringAsync());
        var checks = body.RootElement.GetProperty("checks");
        Assert.Equal("Healthy", checks.GetProperty("store").GetProperty("status").GetString());
        Assert.Equal("Healthy", checks.GetProperty("masstransit-bus").GetProperty("status").GetString());
    }

    [Fact]
    public async Task Viewers_get_403_on_mutations_and_nothing_is_stored()
    {
        await using var host = await ApiTestHost.StartAsync();
        var viewer = host.Client(ApiTestHost.ViewerKey);
        await AssertProblem(await viewer.PostAsync("/api/runs", new StringContent(TinyToy.Recipe())), HttpStatusCode.Forbidden);
        var id = Guid.NewGuid();
        await AssertProblem(await viewer.PostAsync($"/api/runs/{id}/cancel", null), HttpStatusCode.Forbidden);
        await AssertProblem(await viewer.PostAsync($"/api/runs/{id}/resume", null), HttpStatusCode.Forbidden);
        Assert.Equal((0, 0, 0), host.Counts());
        // an operator passes the same check (and reaches the unknown id)
        await AssertProblem(await host.Client(ApiTestHost.OperatorKey).PostAsync($"/api/runs/{id}/cancel", null), HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task Without_configured_keys_the_first_start_makes_one_admin_key_and_stores_only_its_hash()
    {
        var root = Directory.CreateTempSubdirectory("hypersd-api-keys-").FullName;
        try
        {
            string key;
            await using (var host = await ApiTestHost.StartAsync(new ApiOptions(), root: root))
            {
                key = host.App.Services.GetService(typeof(ApiKeyBootstrap)) is ApiKeyBootstrap { GeneratedAdminKey: { } made } ? made
                    : throw new InvalidOperationException("no key was made");
                Assert.True(key.Length >= 40);
                await using var db = host.Db();
                var stored = await db.ApiKeys.SingleAsync();
                Assert.Equal((ApiRoles.Admin, ApiOptions.Hash(key)), (stored.Role, stored.Sha256));
                foreach (var file in Directory.GetFiles(root, "metadata.db*"))
                    Assert.DoesNotContain(key, await File.ReadAllTextAsync(file));
                var admin = host.Client(key);
                Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync("/api/runs")).StatusCode);
                // an admin may mutate: it reaches the unknown id
                Assert.Equal(HttpStatusCode.NotFound, (await admin.PostAsync($"/api/runs/{Guid.NewGuid()}/resume", null)).StatusCode);
            }
            await using (var again = await ApiTestHost.StartAsync(new ApiOptions(), root: root))
            {
                Assert.Null(((ApiKeyBootstrap)again.App.Services.GetService(typeof(ApiKeyBootstrap))!).GeneratedAdminKey);
                Assert.Equal(HttpStatusCode.OK, (await again.Client(key).GetAsync("/api/runs")).StatusCode);
                await using var db = again.Db();
                Assert.Equal(1, await db.ApiKeys.CountAsync());
            }
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task The_OpenAPI_document_lists_the_endpoints()
    {
        await using var host = await ApiTestHost.StartAsync();
        using var document = JsonDocument.Parse(await host.Client(ApiTestHost.ViewerKey).GetStringAsync("/openapi/v1.json"));
        var paths = document.RootElement.GetProperty("paths");
        foreach (var path in new[] { "/api/runs", "/api/runs/{id}", "/api/runs/{id}/cancel", "/api/runs/{id}/resume",
                     "/api/runs/{id}/artifacts/{path}", "/api/evaluations", "/api/evaluations/compare", "/api/evaluations/best" })
            Assert.True(paths.TryGetProperty(path, out _),
                $"no {path} in {string.Join(", ", paths.EnumerateObject().Select(p => p.Name))}");
    }

    [Fact]
    public void A_configured_key_with_an_unknown_role_or_too_short_is_refused_naming_it()
    {
        var role = Assert.Throws<ArgumentException>(() => new ApiOptions
        {
            Keys = [new ApiKeyOptions { Name = "ci", Role = "root", Key = new string('k', 32) }],
        }.Validate());
        Assert.Contains("'ci': unknown role 'root'", role.Message);
        var shortKey = Assert.Throws<ArgumentException>(() => new ApiOptions
        {
            Keys = [new ApiKeyOptions { Name = "ci", Role = ApiRoles.Viewer, Key = "short" }],
        }.Validate());
        Assert.Contains("'ci': a key needs at least", shortKey.Message);
    }
}
