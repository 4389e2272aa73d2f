using System.Globalization;
using System.Text;
using System.Text.Json;
using HyperSd.Services.Runs;

namespace HyperSd.Services.Jobs;

/// <summary>A prompts file that cannot be read as prompts; the message names the file, the line and the field.</summary>
public sealed class PromptFileException(string message) : ArgumentException(message);

/// <summary>
/// Reads a job's prompts from a file, by its extension: .txt (one prompt a line), .json (a list of prompts, or of row
/// objects), .jsonl (one row object a line) or .csv (a header with a <c>prompt</c> column and optionally
/// <c>negative_prompt</c>, <c>seed</c>, <c>count</c>; RFC 4180 quoting). The text must be UTF-8.
/// Empty lines: in .txt, .jsonl and .csv a blank line is no prompt and is skipped (line numbers still count it); a row
/// whose prompt is empty or blank is an error.
/// </summary>
public static class PromptFiles
{
    /// <summary>The rows of a prompts file under <paramref name="inputs"/>' data root, of at most its prompts file size.</summary>
    public static IReadOnlyList<PromptRow> Read(string path, InputRoots inputs)
    {
        var name = Path.GetFileName(path);
        var text = Decode(inputs.ReadDataFile(path, "--prompts-file", inputs.MaxPromptsFileBytes), name);
        var rows = Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".txt" => Lines(text).Where(l => l.Text.Trim().Length > 0).Select(l => new PromptRow(l.Text.Trim(),
                Line: $"{name}:{l.Number}")).ToList(),
            ".json" => Json(text, name),
            ".jsonl" => JsonLines(text, name),
            ".csv" => Csv(text, name),
            var other => throw new PromptFileException(
                $"{name}: unknown prompts file type '{other}': expected .txt (one prompt a line), .json, .jsonl or .csv"),
        };
        foreach (var row in rows)
            if (row.Prompt.Trim().Length == 0) throw new PromptFileException($"{row.Line}: prompt: empty");
        return rows.Count > 0 ? rows : throw new PromptFileException($"{name}: no prompts");
    }

    /// <summary>A prompts file's bytes as UTF-8 text (a byte-order mark is dropped); invalid UTF-8 is an error naming the
    /// file (<paramref name="name"/>) and the line and column of the first bad byte.</summary>
    public static string Decode(byte[] bytes, string name)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes).TrimStart('\uFEFF');
        }
        catch (DecoderFallbackException e)
        {
            int bad = e.Index >= 0 ? e.Index : 0;
            // the decoder's index is into the bytes it was given: count lines before the bad byte
            int line = 1 + bytes.AsSpan(0, Math.Min(bad, bytes.Length)).Count((byte)'\n');
            int column = bad - (bytes.AsSpan(0, bad).LastIndexOf((byte)'\n') + 1) + 1;
            throw new PromptFileException(
                $"{name}:{line}: not valid UTF-8 (byte 0x{bytes[bad]:X2} at column {column}); save the file as UTF-8");
        }
    }

    static IEnumerable<(int Number, string Text)> Lines(string text) =>
        text.Split('\n').Select((l, i) => (i + 1, l.TrimEnd('\r')));

    /// <summary>A row object's fields: prompt (required), negative_prompt, seed, count.</summary>
    sealed record RowJson(string? Prompt, string? NegativePrompt, long? Seed, int? Count);

    static readonly JsonSerializerOptions RowOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        UnmappedMemberHandling = System.Text.Json.Serialization.JsonUnmappedMemberHandling.Disallow,
    };

    static PromptRow Row(JsonElement element, string where)
    {
        if (element.ValueKind == JsonValueKind.String) return new PromptRow(element.GetString()!, Line: where);
        if (element.ValueKind != JsonValueKind.Object)
            throw new PromptFileException($"{where}: expected a prompt (a string) or a row object, got {element.ValueKind}");
        RowJson row;
        try
        {
            row = element.Deserialize<RowJson>(RowOptions)!;
        }
        catch (JsonException e)
        {
            throw new PromptFileException($"{where}: {e.Message}");
        }
        return new PromptRow(row.Prompt ?? throw new PromptFileException($"{where}: prompt: missing"), row.NegativePrompt, row.Seed,
            row.Count, where);
    }

    static List<PromptRow> Json(string text, string name)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(text);
        }
        catch (JsonException e)
        {
            throw new PromptFileException($"{name}:{e.LineNumber + 1}: not valid JSON: {e.Message}");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
                throw new PromptFileException($"{name}: expected a JSON list of prompts, got {doc.RootElement.ValueKind}");
            return doc.RootElement.EnumerateArray().Select((e, i) => Row(e, $"{name}[{i}]")).ToList();
        }
    }

    static List<PromptRow> JsonLines(string text, string name)
    {
        var rows = new List<PromptRow>();
        foreach (var (number, line) in Lines(text))
        {
            if (line.Trim().Length == 0) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                rows.Add(Row(doc.RootElement, $"{name}:{number}"));
            }
            catch (JsonException e)
            {
                throw new PromptFileException($"{name}:{number}: not valid JSON: {e.Message}");
            }
        }
        return rows;
    }

    static readonly string[] CsvColumns = ["prompt", "negative_prompt", "seed", "count"];

    static List<PromptRow> Csv(string text, string name)
    {
        var records = CsvRecords(text, name).Where(r => !(r.Fields.Count == 1 && r.Fields[0].Trim().Length == 0)).ToList();
        if (records.Count == 0) throw new PromptFileException($"{name}: no header row");
        var header = records[0].Fields.Select(f => f.Trim().ToLowerInvariant()).ToList();
        foreach (var column in header)
            if (!CsvColumns.Contains(column))
                throw new PromptFileException(
                    $"{name}:{records[0].Line}: unknown column '{column}' (columns: {string.Join(", ", CsvColumns)})");
        if (!header.Contains("prompt")) throw new PromptFileException($"{name}:{records[0].Line}: no 'prompt' column in the header");
        var rows = new List<PromptRow>();
        foreach (var (line, fields) in records.Skip(1))
        {
            var where = $"{name}:{line}";
            if (fields.Count != header.Count)
                throw new PromptFileException($"{where}: {fields.Count} fields, the header has {header.Count}");
            string? Field(string column) => header.IndexOf(column) is var i and >= 0 && fields[i].Length > 0 ? fields[i] : null;
            long? seed = Field("seed") is { } s
                ? long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v
                    : throw new PromptFileException($"{where}: seed: '{s}' is not an integer")
                : null;
            int? count = Field("count") is { } c
                ? int.TryParse(c.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n
                    : throw new PromptFileException($"{where}: count: '{c}' is not an integer")
                : null;
            rows.Add(new PromptRow(Field("prompt") ?? "", Field("negative_prompt"), seed, count, where));
        }
        return rows;
    }

    /// <summary>RFC 4180 records with the line each starts on: fields separated by commas, a quoted field may hold
    /// commas, line breaks and doubled quotes; a quote inside an unquoted field, text after a closing quote, or a
    /// quote never closed is an error.</summary>
    static IEnumerable<(int Line, List<string> Fields)> CsvRecords(string text, string name)
    {
        int i = 0, line = 1;
        while (i < text.Length)
        {
            int start = line;
            var fields = new List<string>();
            var field = new StringBuilder();
            while (true)
            {
                if (i < text.Length && text[i] == '"')
                {
                    int opened = line;
                    i++;
                    while (true)
                    {
                        if (i >= text.Length) throw new PromptFileException($"{name}:{opened}: a quoted field is never closed");
                        if (text[i] == '"')
                        {
                            if (i + 1 < text.Length && text[i + 1] == '"') { field.Append('"'); i += 2; continue; }
                            i++;
                            break;
                        }
                        if (text[i] == '\n') line++;
                        field.Append(text[i++]);
                    }
                    if (i < text.Length && text[i] is not (',' or '\n' or '\r'))
                        throw new PromptFileException(
                            $"{name}:{line}: text after a closing quote (a quote inside a field is written \"\")");
                }
                else
                {
                    while (i < text.Length && text[i] is not (',' or '\n' or '\r'))
                    {
                        if (text[i] == '"')
                            throw new PromptFileException(
                                $"{name}:{line}: a quote inside an unquoted field (quote the field and write \"\")");
                        field.Append(text[i++]);
                    }
                }
                fields.Add(field.ToString());
                field.Clear();
                if (i < text.Length && text[i] == ',') { i++; continue; }
                break;
            }
            if (i < text.Length && text[i] == '\r') i++;
            if (i < text.Length && text[i] == '\n') { i++; line++; }
            yield return (start, fields);
        }
    }
}
