using CsvHelper;
using Microsoft.AspNetCore.Http;

namespace HyperSd.Api;

/// <summary>CSV answers (RFC 4180, UTF-8; CsvHelper's defaults: invariant culture, doubles as the shortest text that
/// round-trips, times in ISO 8601).</summary>
public static class Csv
{
    public const string ContentType = "text/csv";

    /// <summary>CSV when asked by <c>?format=csv</c> or an Accept header naming text/csv; JSON otherwise. Any other format
    /// is refused, naming the field.</summary>
    public static bool Wanted(HttpRequest request, string? format) => format?.ToLowerInvariant() switch
    {
        "csv" => true,
        "json" => false,
        null => request.GetTypedHeaders().Accept.Any(a => a.MediaType.Equals(ContentType, StringComparison.OrdinalIgnoreCase)),
        _ => throw new Services.Runs.InvalidFieldException("format", $"expected csv or json, got '{format}'"),
    };

    /// <summary>Streams rows written by <paramref name="write"/> as text/csv (asynchronously: servers refuse synchronous
    /// writes to a response).</summary>
    public static IResult Result(Func<CsvWriter, Task> write) => Results.Stream(async stream =>
    {
        await using var csv = CsvWriter.Create(stream, null, leaveOpen: true);
        await write(csv);
        await csv.FlushAsync();
    }, ContentType);

    /// <summary>A header of <typeparamref name="T"/>'s properties, then a record per row.</summary>
    public static IResult Records<T>(IEnumerable<T> rows) => Result(async csv => await csv.WriteRecordsAsync(rows));
}
