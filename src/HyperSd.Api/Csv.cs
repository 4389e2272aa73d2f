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

    /// <summary>A header row of the columns' names, then a record per row.</summary>
    public static IResult Table<T>(IEnumerable<T> rows, IReadOnlyList<CsvColumn<T>> columns) => Result(async csv =>
    {
        foreach (var column in columns) csv.WriteField(column.Header);
        await csv.EndRecordAsync();
        foreach (var row in rows)
        {
            foreach (var column in columns) column.Write(csv, row);
            await csv.EndRecordAsync();
        }
    });

    public static CsvColumn<T> Text<T>(string header, Func<T, string> value) => new(header, (w, r) => w.WriteField(value(r)));
    public static CsvColumn<T> Id<T>(string header, Func<T, Guid> value) => new(header, (w, r) => w.WriteField(value(r), "D"));
    public static CsvColumn<T> Integer<T>(string header, Func<T, int> value) => new(header, (w, r) => w.WriteField(value(r), "D"));
    public static CsvColumn<T> Flag<T>(string header, Func<T, bool> value) => new(header, (w, r) => w.WriteField(value(r)));
    /// <summary>"R": the text parses back to the same double.</summary>
    public static CsvColumn<T> Number<T>(string header, Func<T, double?> value) => new(header, (w, r) => w.WriteField(value(r), "R"));
    public static CsvColumn<T> Time<T>(string header, Func<T, DateTimeOffset> value) => new(header, (w, r) => w.WriteField(value(r), "O"));
}

/// <summary>A CSV column: its header and how a row's value is written (typed, with a format that round-trips).</summary>
public sealed record CsvColumn<T>(string Header, Action<CsvWriter, T> Write);
