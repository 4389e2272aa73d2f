using System.CommandLine;
using System.Globalization;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using HyperSd.Api;
using HyperSd.Services.Runs;
using HyperSd.Services.Schedules;

namespace HyperSd.Cli.Commands;

/// <summary>
/// The CLI as a client of a deployment's API host (<c>--api URL --api-key K</c>): the same typed answers the application
/// layer gives the embedded CLI, read from the API's JSON. The key comes from <c>$HYPERSD_API_KEY</c> when not given, which
/// keeps it out of shell history; errors carry the API's problem details (the field at fault).
/// </summary>
public sealed class ApiClient(HttpClient http) : IDisposable
{
    public const string ApiVariable = "HYPERSD_API", ApiKeyVariable = "HYPERSD_API_KEY";

    public static readonly Option<Uri?> ApiOption = new("--api")
    {
        Description = $"a deployment's API host, e.g. https://hypersd.example.com/ (default: ${ApiVariable}; none: the local store)",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable(ApiVariable) is { Length: > 0 } v ? new Uri(v) : null,
        CustomParser = r => Uri.TryCreate(r.Tokens.Single().Value, UriKind.Absolute, out var u) && u.Scheme is "http" or "https"
            ? u : throw new ArgumentException($"--api: expected an http(s) URL, got '{r.Tokens.Single().Value}'"),
    };

    public static readonly Option<string?> ApiKeyOption = new("--api-key")
    {
        Description = $"the API key for --api (default: ${ApiKeyVariable})",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable(ApiKeyVariable) is { Length: > 0 } v ? v : null,
    };

    /// <summary>The API's JSON (web defaults, enums by camelCase name), as the host writes it.</summary>
    public static readonly JsonSerializerOptions Json = ApiHost.Json(new JsonSerializerOptions(JsonSerializerDefaults.Web));

    /// <summary>A client of the API named by --api, or null when the command works on a local store.</summary>
    public static ApiClient? From(ParseResult parse)
    {
        if (parse.GetValue(ApiOption) is not { } api) return null;
        var key = parse.GetValue(ApiKeyOption)
            ?? throw new ArgumentException($"--api {api}: give its key with --api-key or ${ApiKeyVariable}");
        return Create(api, key);
    }

    public static ApiClient Create(Uri api, string key, HttpMessageHandler? handler = null)
    {
        var http = handler is null ? new HttpClient() : new HttpClient(handler);
        http.BaseAddress = api.AbsoluteUri.EndsWith('/') ? api : new Uri(api.AbsoluteUri + "/");
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return new ApiClient(http);
    }

    public Uri BaseAddress => http.BaseAddress!;

    /// <summary>Adds the --api and --api-key options to a command.</summary>
    public static void AddOptions(Command command)
    {
        command.Options.Add(ApiOption);
        command.Options.Add(ApiKeyOption);
    }

    // --- runs

    public async Task<Guid> SubmitRunAsync(string recipeYaml, CancellationToken ct)
    {
        using var content = new StringContent(recipeYaml, Encoding.UTF8, "application/yaml");
        return (await SendAsync<RunStateView>(HttpMethod.Post, "api/runs", content, ct)).Id;
    }

    public Task<RunDetails> ShowRunAsync(Guid id, CancellationToken ct) =>
        SendAsync<RunDetails>(HttpMethod.Get, $"api/runs/{id}", null, ct);

    public Task<RunStateView> CancelRunAsync(Guid id, CancellationToken ct) =>
        SendAsync<RunStateView>(HttpMethod.Post, $"api/runs/{id}/cancel", null, ct);

    // --- evaluations

    public Task<Page<EvaluationRecord>> QueryEvaluationsAsync(EvaluationFilter filter, Paging paging, EvaluationSort sort, bool descending,
        CancellationToken ct) =>
        SendAsync<Page<EvaluationRecord>>(HttpMethod.Get, "api/evaluations" + Query(filter,
            ("sort", sort.ToString().ToLowerInvariant()), ("desc", descending ? "true" : null),
            ("offset", paging.Offset.ToString(CultureInfo.InvariantCulture)),
            ("limit", paging.Limit.ToString(CultureInfo.InvariantCulture))),
            null, ct);

    public Task<RunComparison> CompareAsync(IReadOnlyList<Guid> runs, EvaluationFilter filter, CancellationToken ct) =>
        SendAsync<RunComparison>(HttpMethod.Get, "api/evaluations/compare" + Query(filter with { Runs = runs }), null, ct);

    public async Task<IReadOnlyList<BestRun>> BestAsync(EvaluationFilter filter, CancellationToken ct) =>
        await SendAsync<List<BestRun>>(HttpMethod.Get, "api/evaluations/best" + Query(filter), null, ct);

    /// <summary>The filter as the query string <see cref="EvaluationsEndpoints.FilterArgs"/> binds (runs repeated).</summary>
    static string Query(EvaluationFilter f, params (string Name, string? Value)[] more)
    {
        static string Time(DateTimeOffset? t) => t?.ToString("O", CultureInfo.InvariantCulture)!;
        var pairs = (f.Runs ?? []).Select(r => ("runs", (string?)r.ToString()))
            .Concat([
                ("recipe", f.Recipe), ("baseModel", f.BaseModel), ("stage", f.Stage), ("model", f.Model),
                ("steps", f.Steps?.ToString(CultureInfo.InvariantCulture)), ("sampler", f.Sampler), ("metric", f.Metric),
                ("from", Time(f.From)), ("to", Time(f.To)), ("schedule", f.Schedule?.ToString()),
            ])
            .Concat(more)
            .Where(p => p.Item2 is not null)
            .Select(p => $"{p.Item1}={Uri.EscapeDataString(p.Item2!)}")
            .ToList();
        return pairs.Count == 0 ? "" : "?" + string.Join("&", pairs);
    }

    // --- schedules

    public async Task<IReadOnlyList<ScheduleView>> ListSchedulesAsync(CancellationToken ct) =>
        await SendAsync<List<ScheduleView>>(HttpMethod.Get, "api/schedules", null, ct);

    public Task<ScheduleView> AddScheduleAsync(ScheduleRequest request, CancellationToken ct) =>
        SendAsync<ScheduleView>(HttpMethod.Post, "api/schedules", JsonContent.Create(request, options: Json), ct);

    public Task<ScheduleView> SetScheduleEnabledAsync(Guid id, bool enabled, CancellationToken ct) =>
        SendAsync<ScheduleView>(HttpMethod.Post, $"api/schedules/{id}/{(enabled ? "resume" : "pause")}", null, ct);

    public async Task RemoveScheduleAsync(Guid id, CancellationToken ct) =>
        await SendAsync<JsonElement?>(HttpMethod.Delete, $"api/schedules/{id}", null, ct);

    async Task<T> SendAsync<T>(HttpMethod method, string path, HttpContent? content, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(method, path) { Content = content };
        using var response = await http.SendAsync(request, ct);
        var text = await response.Content.ReadAsStringAsync(ct);
        if (!response.IsSuccessStatusCode)
            throw new ArgumentException($"{method} {new Uri(http.BaseAddress!, path)}: {(int)response.StatusCode} {response.ReasonPhrase}" +
                                        Problem(text));
        return text.Length == 0 ? default! : JsonSerializer.Deserialize<T>(text, Json)!;
    }

    /// <summary>": detail" from a problem+json body (it names the field at fault), else its errors or title; or the body's start.</summary>
    static string Problem(string body)
    {
        if (body.Length == 0) return "";
        try
        {
            var problem = JsonDocument.Parse(body).RootElement;
            string? Text(string name) =>
                problem.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
            var text = Text("detail");
            if (text is null && problem.TryGetProperty("errors", out var errors) && errors.ValueKind == JsonValueKind.Object)
                text = string.Join("; ", errors.EnumerateObject()
                    .SelectMany(e => e.Value.EnumerateArray().Select(m => $"{e.Name}: {m.GetString()}")));
            text ??= Text("title");
            return text is null ? "" : $": {text}";
        }
        catch (JsonException)
        {
            return $": {body[..Math.Min(body.Length, 300)]}";
        }
    }

    public void Dispose() => http.Dispose();
}
