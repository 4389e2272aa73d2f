using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using CsvHelper;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Cli.Commands;
using HyperSd.Data.Entities;
using HyperSd.Services.Runs;
using HyperSd.Testing;
using Microsoft.AspNetCore.TestHost;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using YamlDotNet.RepresentationModel;

namespace HyperSd.Api.Tests;

/// <summary>The tiny toy recipe through the API on the embedded SQLite store.</summary>
[Collection(nameof(ToyRunTests))]
public sealed class EmbeddedToyRunTests : ToyRunTests
{
    protected override MetadataStoreOptions? Store => null;
}

/// <summary>The same against a real PostgreSQL (a database of its own).</summary>
[Collection(nameof(ToyRunTests))]
public sealed class PostgresToyRunTests(PostgresDatabase database) : ToyRunTests, IClassFixture<PostgresDatabase>
{
    protected override MetadataStoreOptions? Store =>
        new() { Provider = MetadataStoreOptions.Postgres, ConnectionString = database.ConnectionString };
}

/// <summary>One toy run at a time: each takes the cores.</summary>
[CollectionDefinition(nameof(ToyRunTests), DisableParallelization = true)]
public sealed class ToyRunCollection;

/// <summary>The tiny toy recipe through the API on a host with every role and the in-memory bus: it completes, its
/// artifacts download, its evaluation rows are queried, compared and best-of'd, and the CSV reads back the same.</summary>
public abstract class ToyRunTests
{
    /// <summary>The metadata store; null = the embedded SQLite.</summary>
    protected abstract MetadataStoreOptions? Store { get; }

    [Fact]
    public async Task The_tiny_toy_recipe_submitted_through_the_API_completes_and_its_evaluations_are_queryable_as_JSON_and_CSV()
    {
        var models = Directory.CreateTempSubdirectory("hypersd-api-models-").FullName;
        try
        {
            var (teacher, recognizer) = TinyToy.WriteModels(models);
            await using var host = await ApiTestHost.StartAsync(configure: o => o.ToyRecognizerDir = recognizer, store: Store);
            var client = host.Client(ApiTestHost.OperatorKey);

            var submitted = await client.PostAsync("/api/runs",
                new StringContent(TinyToy.Recipe(teacher), Encoding.UTF8, "application/yaml"));
            Assert.Equal(HttpStatusCode.Created, submitted.StatusCode);
            var runId = (await submitted.Content.ReadFromJsonAsync<RunStateView>(ApiTestHost.Json))!.Id;
            Assert.Equal($"/api/runs/{runId}", submitted.Headers.Location?.ToString());

            var run = await WaitForEndAsync(client, runId, TimeSpan.FromMinutes(5));
            Assert.True(run.Run.State == RunState.Succeeded, $"run {run.Run.State}: {run.Run.Error}\n" +
                string.Join("\n", run.Stages.Select(s => $"{s.Name} {s.State}#{s.Attempt}: {s.Error}")));
            Assert.Equal(teacher, run.Run.BaseModel);
            Assert.All(run.Stages, s =>
            {
                Assert.Equal((StageState.Succeeded, 1.0), (s.State, s.Progress));
                Assert.Equal(AttemptOutcome.Succeeded, Assert.Single(s.Attempts).Outcome);
                Assert.NotNull(s.Duration);
            });
            var k1Lora = run.Artifacts.Single(a => a.Kind == ArtifactKind.Lora && a.Stage == "tscd-k1");
            Assert.Equal(2, k1Lora.Inputs.Count);

            await AssertDownloadsAsync(host, client, run);
            var rows = await AssertEvaluationQueriesAsync(host, client, runId, teacher);
            var otherId = await AssertCompareAndBestAsync(host, client, runId, rows);
            await AssertCliClientAsync(host, runId, otherId);
        }
        finally
        {
            Directory.Delete(models, recursive: true);
        }
    }

    static async Task<RunDetails> WaitForEndAsync(HttpClient client, Guid runId, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var run = (await client.GetFromJsonAsync<RunDetails>($"/api/runs/{runId}", ApiTestHost.Json))!;
            if (run.Run.State is RunState.Succeeded or RunState.Failed or RunState.Cancelled) return run;
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"run still {run.Run.State}: " +
                                           string.Join(", ", run.Stages.Select(s => $"{s.Name} {s.State} {s.Progress:P0}")));
            await Task.Delay(500);
        }
    }

    /// <summary>A file artifact (a grid) and a file inside a folder artifact (the LoRA) stream back byte for byte.</summary>
    static async Task AssertDownloadsAsync(ApiTestHost host, HttpClient client, RunDetails run)
    {
        var store = host.App.Services.GetRequiredService<IArtifactStore>();
        var grid = run.Artifacts.First(a => a.Kind == ArtifactKind.Grid);
        var gridResponse = await client.GetAsync($"/api/runs/{run.Run.Id}/artifacts/{grid.Path}");
        Assert.Equal(HttpStatusCode.OK, gridResponse.StatusCode);
        Assert.Equal("image/png", gridResponse.Content.Headers.ContentType?.MediaType);
        Assert.Equal(await File.ReadAllBytesAsync(store.GetFullPath(grid.Path)), await gridResponse.Content.ReadAsByteArrayAsync());

        var lora = run.Artifacts.First(a => a.Kind == ArtifactKind.Lora);
        var folder = store.GetFullPath(lora.Path);
        Assert.True(Directory.Exists(folder));
        var file = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).First();
        var relative = Path.GetRelativePath(store.Root, file).Replace('\\', '/');
        var fileResponse = await client.GetAsync($"/api/runs/{run.Run.Id}/artifacts/{relative}");
        Assert.Equal(HttpStatusCode.OK, fileResponse.StatusCode);
        Assert.Equal(await File.ReadAllBytesAsync(file), await fileResponse.Content.ReadAsByteArrayAsync());
        // the folder itself is not a file: the answer names the files in it
        var folderResponse = await client.GetAsync($"/api/runs/{run.Run.Id}/artifacts/{lora.Path}");
        Assert.Equal(HttpStatusCode.BadRequest, folderResponse.StatusCode);
        Assert.Contains(relative, await folderResponse.Content.ReadAsStringAsync());
    }

    static async Task<IReadOnlyList<EvaluationRecord>> AssertEvaluationQueriesAsync(ApiTestHost host, HttpClient client, Guid runId,
        string teacher)
    {
        await using var db = host.Db();
        var stored = await db.Evaluations.Where(v => v.RunId == runId).ToListAsync();
        Assert.NotEmpty(stored);

        var page = (await client.GetFromJsonAsync<Page<EvaluationRecord>>($"/api/evaluations?runs={runId}&limit=1000", ApiTestHost.Json))!;
        Assert.Equal(stored.Count, page.Total);
        Assert.All(page.Items, r => Assert.Equal(
            stored.Single(v => (v.Model, v.Sampler, v.Steps, v.Metric) == (r.Model, r.Sampler, r.Steps, r.Metric)).Value, r.Value));
        // the evaluation.rewards' scores are the reward-scorer's rows, by stage
        static string StageOf(string metric) => metric is "toy-preference" or "toy-aesthetic" ? "score-evaluation" : "evaluate";
        Assert.All(page.Items, r => Assert.Equal(("tiny", "tiny", teacher, StageOf(r.Metric)), (r.Run, r.Recipe, r.BaseModel, r.Stage)));
        Assert.Contains(page.Items, r => r.Stage == "score-evaluation");

        // the CSV reads back to the same rows and values, by ?format=csv and by the Accept header alike
        var csvText = await client.GetStringAsync($"/api/evaluations?runs={runId}&limit=1000&format=csv");
        Assert.Equal(page.Items, ReadCsv(csvText));
        using var accept = new HttpRequestMessage(HttpMethod.Get, $"/api/evaluations?runs={runId}&limit=1000");
        accept.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/csv"));
        var acceptResponse = await client.SendAsync(accept);
        Assert.Equal("text/csv", acceptResponse.Content.Headers.ContentType?.MediaType);
        Assert.Equal(csvText, await acceptResponse.Content.ReadAsStringAsync());

        // filters, sort and paging
        var hourAgo = Uri.EscapeDataString(DateTimeOffset.UtcNow.AddHours(-1).ToString("O"));
        var fd1 = (await client.GetFromJsonAsync<Page<EvaluationRecord>>(
            $"/api/evaluations?metric=fd&steps=1&recipe=tiny&baseModel={Uri.EscapeDataString(teacher)}&stage=evaluate&from={hourAgo}",
            ApiTestHost.Json))!;
        Assert.Equal(stored.Count(v => v.Metric == "fd" && v.Steps == 1), fd1.Total);
        Assert.All(fd1.Items, r => Assert.Equal(("fd", 1), (r.Metric, r.Steps)));
        var sampler = stored[0].Sampler;
        var bySampler = (await client.GetFromJsonAsync<Page<EvaluationRecord>>(
            $"/api/evaluations?sampler={sampler}&sort=value&desc=true&limit=2&offset=1", ApiTestHost.Json))!;
        Assert.Equal(stored.Count(v => v.Sampler == sampler), bySampler.Total);
        Assert.Equal(stored.Where(v => v.Sampler == sampler).Select(v => v.Value).OrderDescending().Skip(1).Take(2),
            bySampler.Items.Select(r => r.Value));
        var future = (await client.GetFromJsonAsync<Page<EvaluationRecord>>(
            $"/api/evaluations?from={Uri.EscapeDataString(DateTimeOffset.UtcNow.AddHours(1).ToString("O"))}", ApiTestHost.Json))!;
        Assert.Equal(0, future.Total);
        return page.Items;
    }

    static double? Nullable(string? text) => string.IsNullOrEmpty(text) ? null : double.Parse(text, CultureInfo.InvariantCulture);

    static List<EvaluationRecord> ReadCsv(string text)
    {
        using var csv = CsvReader.Create(new StringReader(text), null, false);
        var rows = new List<EvaluationRecord>();
        while (csv.Read())
            rows.Add(new EvaluationRecord(csv.Parse<Guid>("runId"), csv.GetString("run"), csv.GetString("recipe"),
                csv.GetString("baseModel"),
                csv.GetString("stage"), csv.GetString("model"), csv.GetString("sampler"), csv.Parse<int>("steps"), csv.GetString("metric"),
                double.Parse(csv.GetString("value"), CultureInfo.InvariantCulture), Nullable(csv.GetString("low")),
                Nullable(csv.GetString("high")),
                DateTimeOffset.Parse(csv.GetString("createdAt"), CultureInfo.InvariantCulture)));
        return rows;
    }

    /// <summary>A second run (submitted as JSON, cancelled, resumed, cancelled again) beside the first: the comparison has
    /// a column per run (the second's empty), the best run of every metric and steps is the first.</summary>
    static async Task<Guid> AssertCompareAndBestAsync(ApiTestHost host, HttpClient client, Guid runId, IReadOnlyList<EvaluationRecord> rows)
    {
        var json = ToJson(new YamlStream()).ToJsonString();
        var other = await client.PostAsync("/api/runs", new StringContent(json, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, other.StatusCode);
        var otherId = (await other.Content.ReadFromJsonAsync<RunStateView>(ApiTestHost.Json))!.Id;
        async Task<RunState> Post(string action)
        {
            var response = await client.PostAsync($"/api/runs/{otherId}/{action}", null);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, $"{action}: {response.StatusCode} {text}");
            return JsonSerializer.Deserialize<RunStateView>(text, ApiTestHost.Json)!.State;
        }
        Assert.Equal(RunState.Cancelled, await Post("cancel"));
        Assert.Equal(RunState.Running, await Post("resume"));
        Assert.Equal(RunState.Cancelled, await Post("cancel"));

        var listed = (await client.GetFromJsonAsync<Page<RunSummary>>("/api/runs?name=tiny&limit=1", ApiTestHost.Json))!;
        Assert.Equal((2, otherId), (listed.Total, Assert.Single(listed.Items).Id));
        var cancelled = (await client.GetFromJsonAsync<Page<RunSummary>>("/api/runs?state=cancelled", ApiTestHost.Json))!;
        Assert.Equal(otherId, Assert.Single(cancelled.Items).Id);

        var comparison = (await client.GetFromJsonAsync<RunComparison>($"/api/evaluations/compare?runs={runId}&runs={otherId}",
            ApiTestHost.Json))!;
        Assert.Equal([runId, otherId], comparison.Runs.Select(r => r.Id));
        Assert.Equal(rows.Count, comparison.Rows.Count);
        Assert.All(comparison.Rows, c =>
        {
            var stored = rows.Single(r => (r.Model, r.Sampler, r.Metric, r.Steps) == (c.Model, c.Sampler, c.Metric, c.Steps));
            Assert.Equal(stored.Value, c.Values[0]);
            Assert.Equal(stored is { Low: { } low, High: { } high } ? new MetricInterval(low, high) : null, c.Intervals[0]);
            Assert.Null(c.Values[1]);
            Assert.Null(c.Intervals[1]);
        });
        Assert.Contains(comparison.Rows, c => c.Intervals[0] is not null); // adherence and kid rows have one
        var compareCsv = (await client.GetStringAsync($"/api/evaluations/compare?runs={runId}&runs={otherId}&format=csv"))
            .Split("\n", StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToList();
        Assert.Equal($"model,sampler,metric,steps,tiny ({runId}),tiny ({otherId})", compareCsv[0]);
        Assert.Equal(rows.Count + 1, compareCsv.Count);

        var best = (await client.GetFromJsonAsync<List<BestRun>>("/api/evaluations/best", ApiTestHost.Json))!;
        Assert.Equal(rows.Select(r => (r.Metric, r.Steps)).Distinct().Count(), best.Count);
        Assert.All(best, b =>
        {
            Assert.Equal(runId, b.RunId);
            var candidates = rows.Where(r => (r.Metric, r.Steps) == (b.Metric, b.Steps)).ToList();
            Assert.Equal(b.LowerIsBetter ? candidates.Min(r => r.Value) : candidates.Max(r => r.Value), b.Value);
            var row = candidates.Single(r => (r.Model, r.Sampler) == (b.Model, b.Sampler));
            Assert.Equal((row.Low, row.High), (b.Low, b.High));
            // the other rows whose interval (or value) meets the best's interval (or value)
            double low = row.Low ?? row.Value, high = row.High ?? row.Value;
            Assert.Equal(candidates.Count(r => r != row && (r.Low ?? r.Value) <= high && (r.High ?? r.Value) >= low), b.Overlapping);
            Assert.Equal(candidates.Count - 1, b.Others);
        });
        // adherence at a tiny size: the untrained control and the students overlap the best's Wilson interval
        Assert.Contains(best, b => b.Metric == "adherence" && !b.StandsApart);
        var fdBest = await client.GetStringAsync("/api/evaluations/best?metric=fd&format=csv");
        Assert.StartsWith("metric,steps,lowerIsBetter,runId,run,model,sampler,value,low,high,overlapping,others", fdBest);
        return otherId;
    }

    /// <summary>The CLI against the deployment (<c>--api</c>) reads the same answers the application layer gives the CLI on a
    /// local store, and writes them as the API does (CSV that reads back the same; JSON) or as a table.</summary>
    static async Task AssertCliClientAsync(ApiTestHost host, Guid runId, Guid otherId)
    {
        using var api = ApiClient.Create(new Uri("http://localhost/"), ApiTestHost.ViewerKey, host.App.GetTestServer().CreateHandler());
        await using var db = host.Db();
        var filter = new EvaluationFilter(Runs: [runId]);
        var paging = new Paging(0, Paging.MaxLimit);
        var remote = await api.QueryEvaluationsAsync(filter, paging, EvaluationSort.Value, true, CancellationToken.None);
        var local = await EvaluationQueries.QueryAsync(db, filter, paging, EvaluationSort.Value, true);
        Assert.NotEmpty(local.Items);
        Assert.Equal(local.Items, remote.Items);
        Assert.Equal(local.Total, remote.Total);

        var csv = new StringWriter();
        await EvalsCommand.WriteAsync(csv, remote, OutputFormat.Csv);
        Assert.Equal(local.Items, ReadCsv(csv.ToString()));
        var table = new StringWriter();
        await EvalsCommand.WriteAsync(table, remote, OutputFormat.Table);
        var lines = table.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(local.Items.Count + 2, lines.Length); // header, rows, "rows 1–N of N"
        Assert.StartsWith("run ", lines[0]);
        Assert.EndsWith($"of {local.Total}", lines[^1].TrimEnd());

        var fdOnly = await api.QueryEvaluationsAsync(filter with { Metric = "fd", Steps = 1 }, paging, EvaluationSort.Created, false,
            CancellationToken.None);
        Assert.Equal(local.Items.Count(r => (r.Metric, r.Steps) == ("fd", 1)), fdOnly.Total);

        var remoteComparison = await api.CompareAsync([runId, otherId], new EvaluationFilter(), CancellationToken.None);
        var localComparison = await EvaluationQueries.CompareAsync(db, [runId, otherId], new EvaluationFilter());
        Assert.Equal(JsonSerializer.Serialize(localComparison, ApiTestHost.Json), JsonSerializer.Serialize(remoteComparison, ApiTestHost.Json));
        var json = new StringWriter();
        await EvalsCommand.WriteAsync(json, remoteComparison, OutputFormat.Json);
        Assert.Equal(JsonSerializer.Serialize(localComparison, ApiTestHost.Json),
            JsonSerializer.Serialize(JsonSerializer.Deserialize<RunComparison>(json.ToString(), ApiTestHost.Json), ApiTestHost.Json));

        Assert.Equal(RunState.Succeeded, (await api.ShowRunAsync(runId, CancellationToken.None)).Run.State);
        // a viewer's key may read, not submit: the error carries the status
        var refused = await Assert.ThrowsAsync<ArgumentException>(() => api.SubmitRunAsync(TinyToy.Recipe(), CancellationToken.None));
        Assert.Contains("403", refused.Message);
        // a filter the store cannot answer names the field, as the API's problem details do
        var unknown = await Assert.ThrowsAsync<ArgumentException>(() => api.QueryEvaluationsAsync(filter with { Metric = "nope" }, paging,
            EvaluationSort.Created, false, CancellationToken.None));
        Assert.Contains("metric", unknown.Message);
        Assert.Contains("400", unknown.Message);
    }

    /// <summary>The tiny recipe as JSON (numbers as numbers): the API takes either.</summary>
    static JsonNode ToJson(YamlStream yaml)
    {
        yaml.Load(new StringReader(TinyToy.Recipe()));
        return Convert(yaml.Documents[0].RootNode)!;

        static JsonNode? Convert(YamlNode node) => node switch
        {
            YamlMappingNode map => new JsonObject(map.Children.Select(kv =>
                KeyValuePair.Create(((YamlScalarNode)kv.Key).Value!, Convert(kv.Value)))),
            YamlSequenceNode seq => new JsonArray([.. seq.Children.Select(Convert)]),
            YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain, Value: { } v }
                when double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) => JsonValue.Create(d),
            YamlScalarNode s => JsonValue.Create(s.Value),
            _ => throw new NotSupportedException(node.NodeType.ToString()),
        };
    }
}
