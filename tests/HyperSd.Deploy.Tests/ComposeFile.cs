using System.Text.RegularExpressions;

namespace HyperSd.Deploy.Tests;

/// <summary>docker-compose.yml read as Compose does: merge keys resolved, ${VAR}, ${VAR:-default} and ${VAR:?error}
/// interpolated (the required variables with stand-in values, as an .env would give them).</summary>
public sealed partial class ComposeFile
{
    public const string FileName = "docker-compose.yml";

    public string Text { get; } = Repository.Read(FileName);
    public object? Root { get; }
    /// <summary>The variables the file requires (${VAR:?...}): its secrets, from .env.</summary>
    public IReadOnlySet<string> Required { get; }

    public ComposeFile()
    {
        Required = Interpolation().Matches(Text).Where(m => m.Groups["op"].Value == ":?").Select(m => m.Groups["name"].Value).ToHashSet();
        Root = Yaml.Load(Interpolation().Replace(Text, m => m.Groups["op"].Value switch
        {
            ":?" => $"stand-in-{m.Groups["name"].Value.ToLowerInvariant()}",
            ":-" => m.Groups["arg"].Value,
            _ => throw new InvalidDataException($"{FileName}: {m.Value} has no default and is not required"),
        }).Replace("$$", "$", StringComparison.Ordinal));
    }

    public Dictionary<string, object?> Services => Root.MapAt("services").ToDictionary(e => (string)e.Key, e => e.Value);

    public static IReadOnlyList<string> Profiles(object? service) => [.. service.ListAt("profiles").Cast<string>()];

    public static Dictionary<string, string> Environment(object? service) => service.MapAt("environment").Strings();

    /// <summary>The container port a service publishes for <paramref name="port"/> ("127.0.0.1:5672:5672").</summary>
    public static IEnumerable<int> ContainerPorts(object? service) =>
        service.ListAt("ports").Cast<string>().Select(p => int.Parse(p.Split(':')[^1], System.Globalization.CultureInfo.InvariantCulture));

    [GeneratedRegex(@"(?<!\$)\$\{(?<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?<op>:\?|:-)(?<arg>[^}]*))?\}")]
    private static partial Regex Interpolation();
}
