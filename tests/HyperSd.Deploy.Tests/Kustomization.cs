using System.Text.RegularExpressions;
using k8s;
using k8s.Models;

namespace HyperSd.Deploy.Tests;

/// <summary>
/// A kustomization folder read as kustomize would build it, for the cross-checks: its resources (and its bases'), the
/// Kubernetes kinds parsed strictly by the Kubernetes client's models (an unknown field fails), custom resources (KEDA)
/// as plain YAML; its patches with their target selectors; its generated Secret and ConfigMap.
/// </summary>
public sealed partial class Kustomization
{
    public sealed record Patch(V1Deployment Deployment, string Selector, string File);

    public string Folder { get; }
    public string? Namespace { get; }
    public List<object> Objects { get; } = [];
    /// <summary>Custom resources (apiVersion, kind, the document).</summary>
    public List<(string ApiVersion, string Kind, object? Document)> Custom { get; } = [];
    public List<Patch> Patches { get; } = [];
    /// <summary>Generated Secrets: name → keys (from the committed example of their env file).</summary>
    public Dictionary<string, Dictionary<string, string>> Secrets { get; } = [];
    /// <summary>Generated ConfigMaps: name → literals.</summary>
    public Dictionary<string, Dictionary<string, string>> ConfigMaps { get; } = [];

    public Kustomization(string folder)
    {
        Folder = folder;
        var root = Yaml.Load(Repository.Read($"{folder}/kustomization.yaml"));
        Namespace = root.StringAt("namespace");
        foreach (var resource in root.ListAt("resources").Cast<string>())
        {
            var path = Normalize($"{folder}/{resource}");
            if (Directory.Exists(Repository.PathOf(path)))
            {
                var inner = new Kustomization(path);
                Objects.AddRange(inner.Objects);
                Custom.AddRange(inner.Custom);
                Patches.AddRange(inner.Patches);
                foreach (var (k, v) in inner.Secrets) Secrets[k] = v;
                foreach (var (k, v) in inner.ConfigMaps) ConfigMaps[k] = v;
                Namespace ??= inner.Namespace;
            }
            else Load(path);
        }
        foreach (var patch in root.ListAt("patches"))
        {
            var file = $"{folder}/{patch.StringAt("path")}";
            Assert.Equal("Deployment", patch.StringAt("target", "kind"));
            Patches.Add(new Patch(KubernetesYaml.Deserialize<V1Deployment>(Repository.Read(file), strict: true),
                patch.StringAt("target", "labelSelector")!, file));
        }
        foreach (var secret in root.ListAt("secretGenerator"))
        {
            var envFile = $"{folder}/{secret.ListAt("envs").Cast<string>().Single()}";
            Secrets[secret.StringAt("name")!] = EnvFile(Repository.Read(envFile + ".example"));
        }
        foreach (var map in root.ListAt("configMapGenerator"))
            ConfigMaps[map.StringAt("name")!] = map.ListAt("literals").Cast<string>().Select(l => l.Split('=', 2))
                .ToDictionary(p => p[0], p => p[1]);
    }

    public IEnumerable<T> OfKind<T>() => Objects.OfType<T>();

    public IEnumerable<object?> CustomOfKind(string kind) => Custom.Where(c => c.Kind == kind).Select(c => c.Document);

    /// <summary>The patches whose target selects <paramref name="deployment"/>, in order.</summary>
    public IEnumerable<Patch> PatchesOf(V1Deployment deployment) =>
        Patches.Where(p => Selects(p.Selector, deployment.Metadata.Labels ?? new Dictionary<string, string>()));

    /// <summary>A label selector of the forms "key=value" and "key in (a,b)", comma-joined.</summary>
    public static bool Selects(string selector, IDictionary<string, string> labels) =>
        SelectorTerm().Matches(selector).All(m => labels.TryGetValue(m.Groups["key"].Value, out var value) && (m.Groups["value"].Success
            ? value == m.Groups["value"].Value
            : m.Groups["values"].Value.Split(',').Select(v => v.Trim()).Contains(value)));

    /// <summary>KEY=value lines; placeholders such as &lt;RABBITMQ_PASSWORD&gt; become stand-in values.</summary>
    static Dictionary<string, string> EnvFile(string text) =>
        text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).Select(l => l.Split('=', 2))
            .ToDictionary(p => p[0], p => Placeholder().Replace(p[1], m => $"stand-in-{m.Groups[1].Value.ToLowerInvariant()}"));

    void Load(string file)
    {
        var text = Repository.Read(file);
        var documents = Yaml.LoadAll(text);
        if (documents.All(d => d.StringAt("apiVersion") is "v1" or "apps/v1"))
            Objects.AddRange(KubernetesYaml.LoadAllFromString(text, strict: true));
        else
            Custom.AddRange(documents.Select(d => (d.StringAt("apiVersion")!, d.StringAt("kind")!, d)));
    }

    static string Normalize(string path) => Path.GetRelativePath(Repository.Root, Path.GetFullPath(Repository.PathOf(path)));

    [GeneratedRegex(@"(?<key>[\w./-]+)\s*(?:=\s*(?<value>[\w.-]+)|\s+in\s+\((?<values>[^)]*)\))")]
    private static partial Regex SelectorTerm();

    [GeneratedRegex("<([A-Za-z_][A-Za-z0-9_]*)>")]
    private static partial Regex Placeholder();
}
