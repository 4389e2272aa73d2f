using System.Text;
using System.Text.Json;
using SixLabors.ImageSharp;

namespace HyperSd.Distillation.Data;

/// <summary>A JSON Lines manifest: one object per line with the image path in <c>file_name</c> (or <c>image</c>) and
/// the caption in <c>text</c> (or <c>caption</c>), paths relative to the manifest (never absolute or with '..'); blank
/// lines are skipped. Items keep the manifest's order. A malformed line is an error naming the line and field; a missing
/// image is a bad item.</summary>
public sealed class JsonlManifestSource : IImageCaptionSource
{
    public string Description { get; }
    public IReadOnlyList<SourceItem> Items { get; }

    public JsonlManifestSource(string path)
    {
        var lines = File.ReadAllLines(Manifest.Require(path, "JSONL"));
        Description = $"JSONL manifest {Path.GetFullPath(path)}";
        Items = lines.Select((line, i) => (line, i)).Where(l => !string.IsNullOrWhiteSpace(l.line))
            .Select(l => ParseLine(path, l.i + 1, l.line)).ToList();
    }

    static SourceItem ParseLine(string path, int lineNumber, string line)
    {
        var at = $"{path}:{lineNumber}";
        JsonDocument doc;
        try { doc = JsonDocument.Parse(line); }
        catch (JsonException e) { throw new InvalidDataException($"{at}: invalid JSON: {e.Message}", e); }
        using (doc)
        {
            var row = doc.RootElement;
            if (row.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{at}: expected a JSON object, got {row.ValueKind}");
            string Field(string name, string alias)
            {
                bool hasName = row.TryGetProperty(name, out var value), hasAlias = row.TryGetProperty(alias, out var aliasValue);
                if (hasName && hasAlias) throw new InvalidDataException($"{at}: both '{name}' and '{alias}' given; expected one");
                if (!hasName && !hasAlias) throw new InvalidDataException($"{at}: missing field '{name}' (or '{alias}')");
                var (field, v) = hasName ? (name, value) : (alias, aliasValue);
                return v.ValueKind == JsonValueKind.String ? v.GetString()!
                    : throw new InvalidDataException($"{at}: field '{field}' must be a string, got {v.ValueKind}");
            }
            return Manifest.Item(path, at, Field("file_name", "image"), Field("text", "caption"));
        }
    }
}

/// <summary>A CSV manifest (RFC 4180: quoted fields may hold commas, newlines and doubled quotes) whose header names a
/// <c>file_name</c> (or <c>image</c>) and a <c>text</c> (or <c>caption</c>) column; other columns are ignored, paths are
/// relative to the manifest (never absolute or with '..'). A malformed row is an error naming its line and field; a
/// missing image is a bad item.</summary>
public sealed class CsvManifestSource : IImageCaptionSource
{
    public string Description { get; }
    public IReadOnlyList<SourceItem> Items { get; }

    public CsvManifestSource(string path)
    {
        var text = File.ReadAllText(Manifest.Require(path, "CSV"));
        Description = $"CSV manifest {Path.GetFullPath(path)}";
        var records = ParseRecords(text, path);
        if (records.Count == 0) throw new InvalidDataException($"{path}: empty file; expected a header with file_name,text");
        var header = records[0].Fields;
        int Column(string name, string alias)
        {
            var found = header.Select((h, i) => (Name: h.Trim(), Index: i)).Where(h => h.Name == name || h.Name == alias).ToList();
            return found.Count == 1 ? found[0].Index
                : throw new InvalidDataException(
                    $"{path}:{records[0].Line}: the header needs one '{name}' (or '{alias}') column, " +
                    $"got {(found.Count == 0 ? "none" : string.Join(", ", found.Select(f => $"'{f.Name}'")))} " +
                    $"in [{string.Join(",", header)}]");
        }
        int fileColumn = Column("file_name", "image"), textColumn = Column("text", "caption");
        Items = records.Skip(1).Where(r => r.Fields is not [""]).Select(r => r.Fields.Count == header.Count
            ? Manifest.Item(path, $"{path}:{r.Line}", r.Fields[fileColumn], r.Fields[textColumn])
            : throw new InvalidDataException($"{path}:{r.Line}: {r.Fields.Count} fields, the header has {header.Count}")).ToList();
    }

    /// <summary>RFC 4180 records with the line each starts on; CRLF, LF or a lone CR ends a record outside quotes.</summary>
    public static List<(int Line, List<string> Fields)> ParseRecords(string text, string path)
    {
        var records = new List<(int, List<string>)>();
        int i = 0, line = 1;
        while (i < text.Length)
        {
            int recordLine = line;
            var fields = new List<string>();
            while (true)
            {
                var field = new StringBuilder();
                if (i < text.Length && text[i] == '"')
                {
                    int openLine = line;
                    for (i++; ; )
                    {
                        if (i >= text.Length)
                            throw new InvalidDataException(
                                $"{path}:{openLine}: field {fields.Count + 1} opens a quote that is never closed");
                        char c = text[i++];
                        if (c == '"' && i < text.Length && text[i] == '"') { field.Append('"'); i++; }
                        else if (c == '"') break;
                        else { if (c == '\n') line++; field.Append(c); }
                    }
                    if (i < text.Length && text[i] is not (',' or '\r' or '\n'))
                        throw new InvalidDataException($"{path}:{line}: field {fields.Count + 1}: " +
                                                       $"expected ',' or end of line after the closing quote, got '{text[i]}'");
                }
                else
                    for (; i < text.Length && text[i] is not (',' or '\r' or '\n'); i++)
                    {
                        if (text[i] == '"')
                            throw new InvalidDataException($"{path}:{line}: field {fields.Count + 1}: " +
                                                           "a quote inside an unquoted field; quote the whole field and double the quote");
                        field.Append(text[i]);
                    }
                fields.Add(field.ToString());
                if (i < text.Length && text[i] == ',') { i++; continue; }
                break;
            }
            if (i < text.Length && text[i] == '\r') i++;
            if (i < text.Length && text[i] == '\n') i++;
            line++;
            records.Add((recordLine, fields));
        }
        return records;
    }
}

static class Manifest
{
    public static string Require(string path, string kind) => File.Exists(path) ? path
        : throw new FileNotFoundException($"{kind} manifest not found: {path}", path);

    /// <summary>An item whose image path is relative to the manifest's folder; an absolute path or '..' is an error naming
    /// <paramref name="at"/> (the manifest and line): a manifest reaches only what lies beside it.</summary>
    public static SourceItem Item(string manifestPath, string at, string file, string caption)
    {
        if (Path.IsPathRooted(file) || file.Split('/', '\\').Contains(".."))
            throw new InvalidDataException($"{at}: image path '{file}' must be relative to the manifest's folder, without '..'");
        var imagePath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(manifestPath))!, file);
        caption = caption.Trim();
        return new SourceItem(file, caption, () => Image.Load(imagePath), Problem: caption.Length == 0 ? "empty caption" : null);
    }
}
