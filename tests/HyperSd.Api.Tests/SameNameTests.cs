using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Schedules;
using HyperSd.Testing;

namespace HyperSd.Api.Tests;

/// <summary>Names are unique: several submissions of one name at once on PostgreSQL give one 201 and, for the rest, the
/// 400 a name in use gives — whether a loser is caught by the name check or by the unique index behind it.</summary>
public sealed class SameNameTests(PostgresDatabase database) : IClassFixture<PostgresDatabase>
{
    const int Submissions = 8;

    async Task<List<HttpResponseMessage>> AtOnceAsync(Func<HttpClient, Task<HttpResponseMessage>> submit)
    {
        await using var host = await ApiTestHost.StartAsync(
            store: new MetadataStoreOptions { Provider = MetadataStoreOptions.Postgres, ConnectionString = database.ConnectionString });
        var start = new TaskCompletionSource();
        var tasks = Enumerable.Range(0, Submissions).Select(async _ =>
        {
            await start.Task;
            return await submit(host.Client(ApiTestHost.OperatorKey));
        }).ToList();
        start.SetResult();
        return [.. await Task.WhenAll(tasks)];
    }

    static async Task AssertOneCreatedAsync(List<HttpResponseMessage> responses, string exists)
    {
        var texts = await Task.WhenAll(responses.Select(r => r.Content.ReadAsStringAsync()));
        var summary = string.Join("\n", responses.Zip(texts, (r, t) => $"{(int)r.StatusCode}: {t}"));
        Assert.True(responses.Count(r => r.StatusCode == HttpStatusCode.Created) == 1, summary);
        foreach (var (response, text) in responses.Zip(texts).Where(p => p.First.StatusCode != HttpStatusCode.Created))
        {
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, summary);
            Assert.Contains(exists, JsonDocument.Parse(text).RootElement.GetProperty("errors").GetProperty("name")[0].GetString());
        }
    }

    [Fact]
    public async Task Generation_jobs_of_one_name_submitted_at_once_store_one_job()
    {
        const string job = """
            {"name": "same", "model": "toy", "steps": 1, "width": 8, "height": 8, "prompts": [{"prompt": "a red circle"}]}
            """;
        var responses = await AtOnceAsync(c => c.PostAsync("/api/generation-jobs", new StringContent(job, Encoding.UTF8, "application/json")));
        await AssertOneCreatedAsync(responses, "a job named 'same' exists");
        await using var db = MetadataStore.CreateContext(new MetadataStoreOptions
            { Provider = MetadataStoreOptions.Postgres, ConnectionString = database.ConnectionString });
        Assert.Equal(1, db.GenerationJobs.Count(j => j.Name == "same"));
        Assert.Equal(1, db.Runs.Count(r => r.Name == "same"));
    }

    [Fact]
    public async Task Schedules_of_one_name_created_at_once_store_one_schedule()
    {
        var request = new ScheduleRequest("nightly-same", null, TinyToy.Recipe(), "0 2 * * *", "UTC", ScheduleOverlap.Skip);
        var responses = await AtOnceAsync(c => c.PostAsJsonAsync("/api/schedules", request, ApiTestHost.Json));
        await AssertOneCreatedAsync(responses, "a schedule named 'nightly-same' exists");
    }
}
