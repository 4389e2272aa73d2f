using YamlDotNet.Core;
using YamlDotNet.Serialization;

namespace HyperSd.Deploy.Tests;

/// <summary>Untyped YAML (merge keys resolved) for what has no typed model here: the compose file, kustomizations and
/// custom resources. Mappings read as dictionaries, sequences as lists, scalars as strings.</summary>
public static class Yaml
{
    public static List<object?> LoadAll(string text)
    {
        var deserializer = new DeserializerBuilder().Build();
        var parser = new MergingParser(new Parser(new StringReader(text)));
        var documents = new List<object?>();
        parser.Consume<YamlDotNet.Core.Events.StreamStart>();
        while (parser.Accept<YamlDotNet.Core.Events.DocumentStart>(out _))
            documents.Add(deserializer.Deserialize<object?>(parser));
        return documents;
    }

    public static object? Load(string text) => LoadAll(text).Single();

    /// <summary>The node at a path of mapping keys; null where any is missing.</summary>
    public static object? At(this object? node, params string[] path)
    {
        foreach (var key in path)
            node = node is Dictionary<object, object?> map && map.TryGetValue(key, out var next) ? next : null;
        return node;
    }

    public static Dictionary<object, object?> MapAt(this object? node, params string[] path) =>
        node.At(path) as Dictionary<object, object?> ?? [];

    public static List<object?> ListAt(this object? node, params string[] path) => node.At(path) as List<object?> ?? [];

    public static string? StringAt(this object? node, params string[] path) => node.At(path) as string;

    /// <summary>A mapping's string entries.</summary>
    public static Dictionary<string, string> Strings(this Dictionary<object, object?> map) =>
        map.Where(e => e.Value is string).ToDictionary(e => (string)e.Key, e => (string)e.Value!);
}
