using System.IO.Compression;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace HyperSd.Api.Tests;

/// <summary><c>/api/generation-jobs</c>: a toy job through the API host (every role in its process), its progress,
/// manifest and zip; keys and roles as on the other endpoints; bad jobs as problem+json naming the field or line.</summary>
public sealed class GenerationJobApiTests : IAsyncLifetime
{
    ApiTestHost host = null!;

    public async Task InitializeAsync() => host = await ApiTestHost.StartAsync(new ApiOptions { Keys = ApiTestHost.DefaultKeys().Keys, MaxImageSide = 64 });

    public async Task DisposeAsync() => await host.DisposeAsync();

    static StringContent Body(string json) => new(json, Encoding.UTF8, "application/json");

    const string Job = """
        {"name": "api-shapes", "model": "toy", "steps": 2, "width": 32, "height": 32, "imagesPerPrompt": 2, "chunkSize": 3, "seed": 5,
         "sampler": "tcd", "eta": 0.5,
         "prompts": [{"prompt": "a red circle"}, {"prompt": "a blue square", "negativePrompt": "blurry", "count": 1}]}
        """;

    [Fact]
    public async Task A_job_runs_to_the_end_and_its_manifest_and_zip_stream_its_images()
    {
        var client = host.Client(ApiTestHost.OperatorKey);
        var response = await client.PostAsync("/api/generation-jobs", Body(Job));
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        var created = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal((3, 1), (created.GetProperty("images").GetInt32(), created.GetProperty("chunks").GetInt32()));
        var id = created.GetProperty("id").GetGuid();

        var viewer = host.Client(ApiTestHost.ViewerKey);
        JsonElement status;
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        do
        {
            await Task.Delay(200);
            status = JsonDocument.Parse(await viewer.GetStringAsync($"/api/generation-jobs/{id}")).RootElement;
        } while (status.GetProperty("state").GetString() is "pending" or "running" && DateTime.UtcNow < deadline);
        Assert.Equal(("succeeded", 3, 3), (status.GetProperty("state").GetString(), status.GetProperty("imagesDone").GetInt32(),
            status.GetProperty("imageCount").GetInt32()));
        Assert.Single((await viewer.GetFromJsonAsync<JsonElement>("/api/generation-jobs")).EnumerateArray());

        var manifest = (await viewer.GetStringAsync($"/api/generation-jobs/{id}/manifest")).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal([(0, 0, 5L), (0, 1, 6L), (1, 0, 7L)], manifest.Select(l =>
            (l.GetProperty("prompt_index").GetInt32(), l.GetProperty("image_index").GetInt32(), l.GetProperty("seed").GetInt64())));
        using var zip = new ZipArchive(new MemoryStream(await viewer.GetByteArrayAsync($"/api/generation-jobs/{id}/zip")));
        Assert.Equal(["00000-0000.png", "00000-0001.png", "00001-0000.png", "manifest.jsonl"], zip.Entries.Select(e => e.FullName));
        foreach (var line in manifest)
        {
            using var png = new MemoryStream();
            await using (var entry = await zip.GetEntry(line.GetProperty("file").GetString()!)!.OpenAsync()) await entry.CopyToAsync(png);
            Assert.Equal(line.GetProperty("sha256").GetString(), Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(png.ToArray())));
        }

        // viewers read, operators act
        Assert.Equal(HttpStatusCode.Forbidden, (await viewer.PostAsync($"/api/generation-jobs/{id}/cancel", null)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await host.Client(null).GetAsync($"/api/generation-jobs/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await viewer.PostAsync("/api/generation-jobs", Body(Job))).StatusCode);
    }

    [Fact]
    public async Task A_bad_job_is_a_problem_naming_each_field_and_stores_nothing()
    {
        var client = host.Client(ApiTestHost.OperatorKey);
        var before = host.Counts();
        var response = await client.PostAsync("/api/generation-jobs", Body("""
            {"name": "../../etc", "model": "no-such-model", "width": 128, "height": 32, "imagesPerPrompt": 0,
             "prompts": [{"prompt": "a"}, {"prompt": "b", "count": -2}]}
            """));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, text);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var errors = JsonDocument.Parse(text).RootElement.GetProperty("errors");
        foreach (var field in new[] { "name", "model", "width", "images_per_prompt", "prompts[1]" })
            Assert.True(errors.TryGetProperty(field, out _), $"errors do not name '{field}': {text}");
        Assert.Contains("this deployment's limit", errors.GetProperty("width")[0].GetString());
        Assert.Equal(before, host.Counts());

        var unknown = Guid.NewGuid();
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync($"/api/generation-jobs/{unknown}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync($"/api/generation-jobs/{unknown}/zip")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.PostAsync($"/api/generation-jobs/{unknown}/cancel", null)).StatusCode);
        // a LoRA given as a run's: resolved in the store at submission
        var noRun = await client.PostAsync("/api/generation-jobs", Body("""
            {"model": "toy", "prompts": [{"prompt": "a"}], "loras": [{"run": "no-such-run", "steps": 4}]}
            """));
        var noRunText = await noRun.Content.ReadAsStringAsync();
        Assert.True(noRun.StatusCode == HttpStatusCode.BadRequest, noRunText);
        Assert.Equal("loras[0].run: no run 'no-such-run' in the store",
            JsonDocument.Parse(noRunText).RootElement.GetProperty("errors").GetProperty("loras[0].run")[0].GetString());
        Assert.Equal(before, host.Counts());
        var malformed = await client.PostAsync("/api/generation-jobs", Body("{\"model\": \"toy\", \"prompts\": [{\"prompt\": 3}]}"));
        Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);
    }

    [Fact]
    public async Task A_best_of_job_keeps_the_best_scored_candidates_and_its_manifest_gives_their_scores()
    {
        var client = host.Client(ApiTestHost.OperatorKey);
        var response = await client.PostAsync("/api/generation-jobs", Body("""
            {"name": "api-best-of", "model": "toy", "steps": 2, "width": 32, "height": 32, "imagesPerPrompt": 2, "seed": 5,
             "bestOf": 2, "reward": "toy-structure-logp",
             "prompts": [{"prompt": "a red circle at the top left"}, {"prompt": "a blue square in the center"}]}
            """));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, text);
        var created = JsonDocument.Parse(text).RootElement;
        Assert.Equal((4, 8), (created.GetProperty("images").GetInt32(), created.GetProperty("candidates").GetInt32()));
        var id = created.GetProperty("id").GetGuid();
        JsonElement status;
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        do
        {
            await Task.Delay(200);
            status = JsonDocument.Parse(await client.GetStringAsync($"/api/generation-jobs/{id}")).RootElement;
        } while (status.GetProperty("state").GetString() is "pending" or "running" && DateTime.UtcNow < deadline);
        Assert.Equal(("succeeded", 4, 8, 8, 2, "toy-structure-logp"), (status.GetProperty("state").GetString(),
            status.GetProperty("imagesDone").GetInt32(), status.GetProperty("candidatesDone").GetInt32(),
            status.GetProperty("imagesScored").GetInt32(), status.GetProperty("bestOf").GetInt32(), status.GetProperty("reward").GetString()));
        var manifest = (await client.GetStringAsync($"/api/generation-jobs/{id}/manifest")).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(4, manifest.Count);
        foreach (var line in manifest)
        {
            var scores = line.GetProperty("candidates").EnumerateArray().Select(c => c.GetProperty("score").GetDouble()).ToList();
            Assert.Equal(2, scores.Count);
            Assert.Equal(scores.Max(), line.GetProperty("score").GetDouble());
            Assert.Equal("toy-structure-logp", line.GetProperty("reward").GetString());
        }
    }

    [Theory]
    [InlineData("\"bestOf\": 0", "best_of", "must be 1 (off) to 64 (this deployment's limit), got 0")]
    [InlineData("\"bestOf\": 100, \"reward\": \"toy-structure\"", "best_of", "must be 1 (off) to 64 (this deployment's limit), got 100")]
    [InlineData("\"bestOf\": 3", "reward", "required with best_of 3: the reward that scores the images (for the toy model: toy-structure, toy-structure-logp)")]
    [InlineData("\"bestOf\": 3, \"reward\": \"pickscore\"", "reward", "unknown reward 'pickscore' for the toy model (allowed: toy-structure, toy-structure-logp)")]
    [InlineData("\"score\": true, \"reward\": \"toy-structure\", \"rewardFiles\": {\"clip\": \"/etc\"}", "reward_files",
        "the toy rewards read no files (the worker's toy recognizer)")]
    public async Task A_bad_best_of_or_reward_is_a_400_naming_the_field_and_stores_nothing(string fields, string field, string message)
    {
        var client = host.Client(ApiTestHost.OperatorKey);
        var before = host.Counts();
        var response = await client.PostAsync("/api/generation-jobs", Body($$"""
            {"model": "toy", "width": 32, "height": 32, "prompts": [{"prompt": "a red circle at the top left"}], {{fields}}}
            """));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, text);
        var errors = JsonDocument.Parse(text).RootElement.GetProperty("errors");
        Assert.True(errors.TryGetProperty(field, out var messages), $"errors do not name '{field}': {text}");
        Assert.Contains(message, messages.EnumerateArray().Select(m => m.GetString()));
        Assert.Equal(before, host.Counts());
    }
}
