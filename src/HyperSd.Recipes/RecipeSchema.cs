using System.Globalization;
using System.Reflection;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;
using YamlDotNet.Serialization;
using YamlDotNet.Serialization.NamingConventions;

namespace HyperSd.Recipes;

/// <summary>One thing wrong with a recipe: the field's dotted path (tscd.weights.4.mse) and what is wrong.</summary>
public sealed record RecipeProblem(string Field, string Message)
{
    public override string ToString() => $"{Field}: {Message}";
}

/// <summary>
/// Checks a parsed YAML tree against the recipe records before deserializing it, so that every unknown key and every
/// value of the wrong shape or type is reported (YamlDotNet stops at the first). The records themselves are the
/// schema: their init properties are the allowed keys. What fails is removed from the tree, so the rest still loads
/// and is validated too.
/// </summary>
static class RecipeSchema
{
    public static readonly INamingConvention Keys = UnderscoredNamingConvention.Instance;
    public static readonly INamingConvention EnumValues = HyphenatedNamingConvention.Instance;

    public static void CheckSection(YamlMappingNode mapping, Type type, string path, List<RecipeProblem> problems)
    {
        var nullability = new NullabilityInfoContext();
        var properties = Properties(type);
        var remove = new List<YamlNode>();
        foreach (var (keyNode, value) in mapping.Children)
        {
            var key = (keyNode as YamlScalarNode)?.Value ?? "";
            var field = Join(path, key);
            if (!properties.TryGetValue(key, out var property))
            {
                problems.Add(new(field, $"unknown key (allowed: {string.Join(", ", properties.Keys)})"));
                remove.Add(keyNode);
            }
            else if (!CheckValue(value, property.PropertyType,
                         nullability.Create(property).WriteState == NullabilityState.Nullable, field, problems))
                remove.Add(keyNode);
        }
        foreach (var key in remove) mapping.Children.Remove(key);
    }

    /// <summary>The keys a section allows, in declaration order.</summary>
    public static Dictionary<string, PropertyInfo> Properties(Type type) => type
        .GetProperties(BindingFlags.Public | BindingFlags.Instance)
        .Where(p => p.SetMethod is not null && p.GetIndexParameters().Length == 0)
        .ToDictionary(p => Keys.Apply(p.Name));

    /// <summary>False when the value cannot be loaded as <paramref name="type"/> (then the caller drops the key).</summary>
    static bool CheckValue(YamlNode node, Type type, bool nullable, string field, List<RecipeProblem> problems)
    {
        bool Fail(string message)
        {
            problems.Add(new(field, message));
            return false;
        }
        var scalar = node as YamlScalarNode;
        var underlying = Nullable.GetUnderlyingType(type);
        if (IsNull(node))
        {
            if (nullable || underlying is not null) return true;
            // an empty section (every line commented out) means its defaults
            return IsSection(type) ? false : Fail("a value is required (got: nothing)");
        }
        type = underlying ?? type;

        if (type == typeof(string))
            return scalar is not null || Fail($"expected text (got: {Describe(node)})");
        if (type == typeof(int) || type == typeof(long))
            return scalar is not null
                && long.TryParse(scalar.Value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v)
                && (type == typeof(long) || v is >= int.MinValue and <= int.MaxValue)
                || Fail($"expected an integer (got: {Describe(node)})");
        if (type == typeof(bool))
            return scalar is not null && bool.TryParse(scalar.Value, out _) || Fail($"expected true or false (got: {Describe(node)})");
        if (type == typeof(double))
            return scalar is not null && double.TryParse(scalar.Value, NumberStyles.Float, CultureInfo.InvariantCulture, out _)
                || Fail($"expected a number (got: {Describe(node)})");
        if (type.IsEnum)
        {
            var allowed = Enum.GetNames(type).Select(EnumValues.Apply).ToList();
            return scalar is not null && allowed.Contains(scalar.Value!)
                || Fail($"unknown value {Describe(node)} (allowed: {string.Join(", ", allowed)})");
        }
        if (ElementType(type, typeof(IReadOnlyList<>)) is { } element)
        {
            if (node is not YamlSequenceNode sequence) return Fail($"expected a list (got: {Describe(node)})");
            bool ok = true;
            for (int i = 0; i < sequence.Children.Count; i++)
                ok &= CheckValue(sequence.Children[i], element, false, $"{field}[{i}]", problems);
            return ok;
        }
        if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IReadOnlyDictionary<,>))
        {
            if (node is not YamlMappingNode map) return Fail($"expected a mapping (got: {Describe(node)})");
            bool ok = true;
            foreach (var (key, value) in map.Children)
                ok &= CheckValue(key, type.GetGenericArguments()[0], false, $"{field}.{(key as YamlScalarNode)?.Value}", problems)
                    & CheckValue(value, type.GetGenericArguments()[1], false, $"{field}.{(key as YamlScalarNode)?.Value}", problems);
            return ok;
        }
        if (node is not YamlMappingNode section) return Fail($"expected a mapping (got: {Describe(node)})");
        CheckSection(section, type, field, problems);
        return true;
    }

    static bool IsSection(Type type) => type.IsClass && type != typeof(string) && !type.IsGenericType;

    static Type? ElementType(Type type, Type generic) =>
        type.IsGenericType && type.GetGenericTypeDefinition() == generic ? type.GetGenericArguments()[0] : null;

    /// <summary>YAML's null: a plain (unquoted) empty value, ~ or null.</summary>
    static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: ScalarStyle.Plain or ScalarStyle.Any } s
        && s.Value is null or "" or "~" or "null" or "Null" or "NULL";

    static string Describe(YamlNode node) => node switch
    {
        YamlScalarNode s => $"'{s.Value}'",
        YamlSequenceNode => "a list",
        _ => "a mapping",
    };

    static string Join(string path, string key) => path.Length == 0 ? key : $"{path}.{key}";
}
