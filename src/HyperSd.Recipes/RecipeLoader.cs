using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;
using YamlDotNet.Serialization;

namespace HyperSd.Recipes;

/// <summary>A recipe that cannot be run; the message lists every problem as <c>&lt;file&gt;: &lt;field&gt;: &lt;problem&gt;</c>.</summary>
public sealed class RecipeValidationException(string sourceName, IReadOnlyList<RecipeProblem> problems)
    : Exception($"{sourceName}: {problems.Count} problem(s) in the recipe:\n" +
                string.Join("\n", problems.Select(p => $"{sourceName}: {p}")))
{
    public string SourceName { get; } = sourceName;
    public IReadOnlyList<RecipeProblem> Problems { get; } = problems;
}

/// <summary>Reads recipes from YAML: syntax, then the shape of every key and value, then the values' meaning; all
/// problems of a stage are reported together.</summary>
public static class RecipeLoader
{
    public static Recipe Load(string path) => Parse(File.ReadAllText(path), path);

    /// <param name="sourceName">Names the recipe in error messages (its path, usually).</param>
    public static Recipe Parse(string yaml, string sourceName)
    {
        var root = ReadTree(yaml, sourceName);
        var problems = new List<RecipeProblem>();
        RecipeSchema.CheckSection(root, typeof(Recipe), "", problems);

        // The checked tree (failed keys removed) goes back through text: YamlDotNet deserializes from a parser.
        var text = new StringWriter();
        new YamlStream(new YamlDocument(root)).Save(text, assignAnchors: false);
        var recipe = Deserializer.Deserialize<Recipe>(text.ToString())
            ?? throw new RecipeValidationException(sourceName, [new("(document)", "the recipe is empty")]);
        // a value already refused was replaced by its default: say nothing more about that field
        var refused = problems.Select(p => p.Field).ToList();
        problems.AddRange(recipe.Problems().Where(p => !refused.Any(field => Overlap(field, p.Field))));
        if (problems.Count > 0) throw new RecipeValidationException(sourceName, problems);
        return recipe;
    }

    static bool Overlap(string a, string b)
    {
        (a, b) = (a.Replace('[', '.'), b.Replace('[', '.'));
        return a == b || a.StartsWith(b + '.', StringComparison.Ordinal) || b.StartsWith(a + '.', StringComparison.Ordinal);
    }

    static YamlMappingNode ReadTree(string yaml, string sourceName)
    {
        var stream = new YamlStream();
        var scanner = new Scanner(new StringReader(yaml));
        try
        {
            stream.Load(new Parser(scanner));
        }
        catch (YamlException e)
        {
            throw new RecipeValidationException(sourceName,
                [new($"line {e.Start.Line}, column {e.Start.Column}", $"YAML syntax error: {e.Message}")]);
        }
        catch (InvalidOperationException)
        {
            // YamlDotNet's scanner throws this (without a position) on some unclosed flow collections
            var at = scanner.CurrentPosition;
            throw new RecipeValidationException(sourceName, [new($"line {at.Line}, column {at.Column}",
                "YAML syntax error: the parser stopped here (an unclosed [ or { above?)")]);
        }
        return stream.Documents.Count switch
        {
            0 => throw new RecipeValidationException(sourceName, [new("(document)", "the recipe is empty")]),
            > 1 => throw new RecipeValidationException(sourceName,
                [new("(document)", $"expected one YAML document (got: {stream.Documents.Count})")]),
            _ => stream.Documents[0].RootNode as YamlMappingNode ?? throw new RecipeValidationException(sourceName,
                [new("(document)",
                    $"expected a mapping of sections (allowed: {string.Join(", ", RecipeSchema.Properties(typeof(Recipe)).Keys)})")]),
        };
    }

    static readonly IDeserializer Deserializer = new DeserializerBuilder()
        .WithNamingConvention(RecipeSchema.Keys)
        .WithEnumNamingConvention(RecipeSchema.EnumValues)
        .WithTypeMapping<IReadOnlyList<int>, List<int>>()
        .WithTypeMapping<IReadOnlyList<string>, List<string>>()
        .WithTypeMapping<IReadOnlyList<EvaluationSampler>, List<EvaluationSampler>>()
        .WithTypeMapping<IReadOnlyList<LoraFormat>, List<LoraFormat>>()
        .WithTypeMapping<IReadOnlyDictionary<int, LossWeightsRecipe>, Dictionary<int, LossWeightsRecipe>>()
        .WithTypeMapping<IReadOnlyDictionary<string, double>, Dictionary<string, double>>()
        .Build();

    internal static readonly ISerializer Serializer = new SerializerBuilder()
        .WithNamingConvention(RecipeSchema.Keys)
        .WithEnumNamingConvention(RecipeSchema.EnumValues)
        .DisableAliases()
        .Build();
}
