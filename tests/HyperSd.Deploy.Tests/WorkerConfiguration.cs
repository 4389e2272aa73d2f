using HyperSd.Services.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Primitives;

namespace HyperSd.Deploy.Tests;

/// <summary>
/// What hypersd-worker reads from its environment: the keys are recorded from <see cref="WorkerOptions.FromConfiguration"/>
/// itself (not a copy of its list), and a deployment's variables are read through it, so they are validated as the
/// worker validates them (roles, transport, devices, the broker's address).
/// </summary>
public static class WorkerConfiguration
{
    /// <summary>Environment variables under the worker's configuration section ("HyperSd:").</summary>
    public const string Prefix = "HyperSd__";

    /// <summary>Keys within the section, e.g. "Roles", "Store:ConnectionString".</summary>
    public static IReadOnlySet<string> Keys { get; } = RecordKeys();

    public static bool IsWorkerVariable(string name) => name.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>HyperSd__Store__ConnectionString → Store:ConnectionString.</summary>
    public static string KeyOf(string variable) => variable[Prefix.Length..].Replace("__", ":", StringComparison.Ordinal);

    /// <summary>The worker's options from these variables (others are ignored), as the host reads them.</summary>
    public static WorkerOptions Options(IEnumerable<KeyValuePair<string, string>> environment) =>
        WorkerOptions.FromConfiguration(new ConfigurationBuilder()
            .AddInMemoryCollection(environment.Where(v => IsWorkerVariable(v.Key))
                .Select(v => KeyValuePair.Create(KeyOf(v.Key), (string?)v.Value)))
            .Build());

    /// <summary>Asserts that every worker variable names a key the worker reads.</summary>
    public static void AssertKnown(IEnumerable<string> variables, string where)
    {
        foreach (var variable in variables.Where(IsWorkerVariable))
            Assert.True(Keys.Contains(KeyOf(variable)),
                $"{where}: {variable} is no setting of hypersd-worker (it reads {string.Join(", ", Keys.Order())})");
    }

    static IReadOnlySet<string> RecordKeys()
    {
        var recorder = new RecordingConfiguration();
        WorkerOptions.FromConfiguration(recorder);
        return recorder.Read;
    }

    /// <summary>An empty configuration that records every key read from it.</summary>
    sealed class RecordingConfiguration : IConfiguration
    {
        public HashSet<string> Read { get; } = [];

        public string? this[string key]
        {
            get
            {
                Read.Add(key);
                return null;
            }
            set => throw new NotSupportedException();
        }

        public IConfigurationSection GetSection(string key) => throw new NotSupportedException($"section {key}");
        public IEnumerable<IConfigurationSection> GetChildren() => [];
        public IChangeToken GetReloadToken() => throw new NotSupportedException();
    }
}
