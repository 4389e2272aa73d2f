using System.Text.RegularExpressions;

namespace HyperSd.Deploy.Tests;

/// <summary>A Dockerfile's stages as far as the cross-checks need them: each stage's base, its instructions (continued
/// lines joined, comments dropped) and its environment including what it inherits from the stages it builds on.</summary>
public sealed partial class Dockerfile
{
    public sealed record Stage(string Name, string From, List<(string Keyword, string Arguments)> Instructions);

    public string RelativePath { get; }
    public List<Stage> Stages { get; } = [];

    public Dockerfile(string relativePath)
    {
        RelativePath = relativePath;
        var joined = Regex.Replace(Repository.Read(relativePath), @"\\\r?\n", " ");
        foreach (var raw in joined.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var space = line.IndexOf(' ');
            var (keyword, arguments) = (line[..space].ToUpperInvariant(), line[(space + 1)..].Trim());
            if (keyword == "FROM")
            {
                var from = FromPattern().Match(arguments);
                Assert.True(from.Success, $"{relativePath}: FROM without a stage name: {line}");
                Stages.Add(new Stage(from.Groups["name"].Value, from.Groups["base"].Value, []));
            }
            else if (Stages.Count > 0)
                Stages[^1].Instructions.Add((keyword, arguments));
        }
    }

    public Stage this[string name] => Stages.SingleOrDefault(s => s.Name == name)
        ?? throw new KeyNotFoundException($"{RelativePath} has no stage '{name}' ({string.Join(", ", Stages.Select(s => s.Name))})");

    public bool HasStage(string name) => Stages.Any(s => s.Name == name);

    /// <summary>The stage and the stages it is built FROM, nearest first.</summary>
    public IEnumerable<Stage> Lineage(string name)
    {
        for (var stage = this[name]; ; stage = this[stage.From])
        {
            yield return stage;
            if (!HasStage(stage.From)) yield break;
        }
    }

    /// <summary>The instructions of a stage with its inherited ones (later stages win, so nearest first).</summary>
    public IEnumerable<string> Arguments(string stage, string keyword) =>
        Lineage(stage).SelectMany(s => s.Instructions.Where(i => i.Keyword == keyword).Reverse()).Select(i => i.Arguments);

    /// <summary>ENV of a stage, inherited ones included.</summary>
    public Dictionary<string, string> Environment(string stage)
    {
        var env = new Dictionary<string, string>();
        foreach (var s in Lineage(stage).Reverse())
            foreach (var (_, arguments) in s.Instructions.Where(i => i.Keyword == "ENV"))
                foreach (Match m in EnvPattern().Matches(arguments))
                    env[m.Groups["key"].Value] = m.Groups["value"].Value;
        return env;
    }

    /// <summary>The exec-form arguments of the nearest instruction, e.g. ENTRYPOINT ["hypersd-worker"].</summary>
    public string[] ExecForm(string stage, string keyword, string prefix = "")
    {
        var arguments = Arguments(stage, keyword).FirstOrDefault()
            ?? throw new KeyNotFoundException($"{RelativePath}: stage {stage} has no {keyword}");
        var json = arguments[arguments.IndexOf('[', StringComparison.Ordinal)..];
        Assert.StartsWith(prefix, arguments);
        return System.Text.Json.JsonSerializer.Deserialize<string[]>(json)!;
    }

    [GeneratedRegex(@"^(?:--\S+\s+)*(?<base>\S+)\s+AS\s+(?<name>\S+)$", RegexOptions.IgnoreCase)]
    private static partial Regex FromPattern();

    [GeneratedRegex(@"(?<key>[A-Za-z_][A-Za-z0-9_]*)=(?<value>""[^""]*""|\S+)")]
    private static partial Regex EnvPattern();
}
