using System.Text.Json;
using System.Text.Json.Serialization;

namespace HyperSd.Diffusion.IO;

/// <summary>Reads diffusers/transformers <c>config.json</c> files into config records (snake_case names).</summary>
public static class ModelConfig
{
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowReadingFromString,
        WriteIndented = true,
        Converters = { new IntOrListConverter() },
    };

    public static T Read<T>(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"config not found: {path}", path);
        try
        {
            return JsonSerializer.Deserialize<T>(File.ReadAllText(path), Json)
                   ?? throw new InvalidDataException($"{path}: empty config");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: invalid config at {e.Path}: {e.Message}");
        }
    }

    public static void Write<T>(string path, T config)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, JsonSerializer.Serialize(config, Json));
    }
}

/// <summary>A config value that diffusers allows as one int or a per-block list (e.g. attention_head_dim).</summary>
[JsonConverter(typeof(IntOrListConverter))]
public sealed record IntOrList(IReadOnlyList<int> Values)
{
    public static implicit operator IntOrList(int v) => new([v]);
    public int this[int i] => Values.Count == 1 ? Values[0] : Values[i];
    public bool IsList => Values.Count > 1;
    public int[] Expand(int n) => Enumerable.Range(0, n).Select(i => this[i]).ToArray();
}

public sealed class IntOrListConverter : JsonConverter<IntOrList>
{
    public override IntOrList Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Number) return new([reader.GetInt32()]);
        if (reader.TokenType != JsonTokenType.StartArray) throw new JsonException("expected an int or a list of ints");
        var values = new List<int>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray) values.Add(reader.GetInt32());
        return new(values);
    }

    public override void Write(Utf8JsonWriter writer, IntOrList value, JsonSerializerOptions options)
    {
        if (value.Values.Count == 1) { writer.WriteNumberValue(value.Values[0]); return; }
        writer.WriteStartArray();
        foreach (var v in value.Values) writer.WriteNumberValue(v);
        writer.WriteEndArray();
    }
}
