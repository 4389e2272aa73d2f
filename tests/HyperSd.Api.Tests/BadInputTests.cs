using System.Net;
using System.Text;
using System.Text.Json;
using HyperSd.Services.Runs;
using HyperSd.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace HyperSd.Api.Tests;

/// <summary>Each bad input gets a 4xx problem+json whose errors name the field at fault, and stores nothing.</summary>
public sealed class BadInputTests : IAsyncLifetime
{
    ApiTestHost host = null!;
    HttpClient client = null!;
    Guid runId;

    public async Task InitializeAsync()
    {
        host = await ApiTestHost.StartAsync(new ApiOptions { Keys = ApiTestHost.DefaultKeys().Keys, MaxRecipeBytes = 64 * 1024 });
        client = host.Client(ApiTestHost.OperatorKey);
        // a stored run that is never started (no model runs)
        runId = await host.App.Services.GetRequiredService<RunSubmission>().CreateAsync(TinyToy.Recipe(), "test recipe");
    }

    public async Task DisposeAsync() => await host.DisposeAsync();

    /// <summary>Asserts the status, the problem+json type, that <paramref name="field"/> is named in errors, and that the
    /// store holds what it held before.</summary>
    async Task<JsonElement> AssertRefused(Func<Task<HttpResponseMessage>> send, HttpStatusCode status, string field)
    {
        var before = host.Counts();
        var response = await send();
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"{response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonDocument.Parse(text).RootElement;
        Assert.Equal((int)status, problem.GetProperty("status").GetInt32());
        Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), $"errors do not name '{field}': {text}");
        Assert.Equal(before, host.Counts());
        return problem;
    }

    Task<HttpResponseMessage> Submit(string body, string type = "application/yaml") =>
        client.PostAsync("/api/runs", new StringContent(body, Encoding.UTF8, type));

    [Fact]
    public async Task A_recipe_with_a_bad_value_names_its_field()
    {
        var problem = await AssertRefused(() => Submit(TinyToy.Recipe().Replace("count: 24", "count: -3")), HttpStatusCode.BadRequest,
            "trajectories.count");
        Assert.Equal("the recipe is not valid", problem.GetProperty("title").GetString());
    }

    [Fact]
    public async Task A_recipe_that_is_not_yaml_or_json_is_refused_naming_where()
    {
        // a syntax error's "field" is its place in the text
        var problem = await AssertRefused(() => Submit("{\"name\": \"tiny\", \"seed\": [", "application/json"), HttpStatusCode.BadRequest,
            "line 2, column 1");
        Assert.Contains("YAML syntax error", problem.GetProperty("errors").GetProperty("line 2, column 1")[0].GetString());
    }

    [Fact]
    public async Task An_empty_body_is_refused() => await AssertRefused(() => Submit(""), HttpStatusCode.BadRequest, "body");

    [Fact]
    public async Task An_oversized_body_gets_413() =>
        await AssertRefused(() => Submit(TinyToy.Recipe() + "\n#" + new string('x', 70 * 1024)), HttpStatusCode.RequestEntityTooLarge,
            "body");

    [Fact]
    public async Task Unknown_run_ids_get_404_naming_the_id()
    {
        var unknown = Guid.NewGuid();
        await AssertRefused(() => client.GetAsync($"/api/runs/{unknown}"), HttpStatusCode.NotFound, "id");
        await AssertRefused(() => client.PostAsync($"/api/runs/{unknown}/cancel", null), HttpStatusCode.NotFound, "id");
        await AssertRefused(() => client.PostAsync($"/api/runs/{unknown}/resume", null), HttpStatusCode.NotFound, "id");
        await AssertRefused(() => client.GetAsync($"/api/runs/{unknown}/artifacts/a/b.png"), HttpStatusCode.NotFound, "id");
        await AssertRefused(() => client.GetAsync($"/api/evaluations/compare?runs={runId}&runs={unknown}"), HttpStatusCode.NotFound,
            "runs");
    }

    [Theory]
    [InlineData("/api/runs?offset=-1", "offset")]
    [InlineData("/api/runs?limit=0", "limit")]
    [InlineData("/api/evaluations?offset=-5", "offset")]
    [InlineData("/api/evaluations?limit=-1", "limit")]
    [InlineData("/api/evaluations?steps=0", "steps")]
    [InlineData("/api/evaluations?metric=sharpness", "metric")]
    [InlineData("/api/evaluations?sampler=euler-a", "sampler")]
    [InlineData("/api/evaluations/best?metric=sharpness", "metric")]
    [InlineData("/api/evaluations?format=xml", "format")]
    [InlineData("/api/evaluations?sort=loss", "sort")]
    [InlineData("/api/runs?state=paused", "state")]
    [InlineData("/api/evaluations?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from")]
    public async Task Bad_query_values_name_their_parameter(string url, string field) =>
        await AssertRefused(() => client.GetAsync(url), HttpStatusCode.BadRequest, field);

    [Fact]
    public async Task Comparing_fewer_than_two_runs_is_refused() =>
        await AssertRefused(() => client.GetAsync($"/api/evaluations/compare?runs={runId}"), HttpStatusCode.BadRequest, "runs");

    [Theory]
    [InlineData("..%2F..%2Fmetadata.db")]
    [InlineData("runs%2F..%2F..%2Fmetadata.db")]
    [InlineData("%2Fetc%2Fpasswd")]
    public async Task A_path_traversal_in_an_artifact_name_is_refused(string path) =>
        await AssertRefused(() => client.GetAsync($"/api/runs/{runId}/artifacts/{path}"), HttpStatusCode.BadRequest, "path");

    [Fact]
    public async Task A_path_that_is_no_artifact_of_the_run_is_refused() =>
        await AssertRefused(() => client.GetAsync($"/api/runs/{runId}/artifacts/runs/other/lora.safetensors"), HttpStatusCode.BadRequest,
            "path");
}
