using System.Globalization;
using HyperSd.Contracts;
using HyperSd.Data;
using Microsoft.Extensions.Configuration;

using HyperSd.Services.Stages;

namespace HyperSd.Services.Hosting;

/// <summary>How one worker process runs: its roles, the message transport, the metadata store, the artifact root, its
/// devices and the lease/retry timings.</summary>
public sealed class WorkerOptions
{
    public const string InMemory = "inmemory";
    public const string RabbitMqTransport = "rabbitmq";

    /// <summary>The roles this process serves (any subset of the stage catalogue's <see cref="StageCatalogue.Roles"/>; empty =
    /// a client that only submits and queries). Default: every built-in role.</summary>
    public List<string> Roles { get; set; } = [.. StageCatalogue.Default().Roles];
    /// <summary>inmemory (one process) or rabbitmq.</summary>
    public string Transport { get; set; } = InMemory;
    public RabbitMqOptions RabbitMq { get; set; } = new();
    /// <summary>Default: the embedded SQLite file beside the default artifact root.</summary>
    public MetadataStoreOptions Store { get; set; } = new() { ConnectionString = "Data Source=artifacts/store/metadata.db" };
    /// <summary>The artifact store's root folder, shared by every worker.</summary>
    public string ArtifactRoot { get; set; } = "artifacts/store/artifacts";
    /// <summary>Compute devices ("cpu", "cuda:0", ...); each runs one stage at a time.</summary>
    public List<string> Devices { get; set; } = ["cpu"];
    /// <summary>Tensor (OpenMP) threads of each stage's work; null = LibTorch's default. With several CPU slots, 1 each
    /// keeps concurrent stages from contending for the cores.</summary>
    public int? TensorThreads { get; set; }
    /// <summary>Names this process as a lease owner.</summary>
    public string WorkerId { get; set; } = $"{Environment.MachineName}-{Environment.ProcessId}";

    /// <summary>This worker's clock, for the times it stamps on what it records (never for leases: their times are the
    /// database server's). Tests skew it.</summary>
    public TimeProvider Clock { get; set; } = TimeProvider.System;

    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromSeconds(5);
    /// <summary>A running stage whose heartbeat is older than this is re-dispatched.</summary>
    public TimeSpan LeaseTimeout { get; set; } = TimeSpan.FromSeconds(60);
    /// <summary>A running stage that reports no progress for this long is hung: its attempt is abandoned and the stage
    /// re-dispatched. Per stage kind in <see cref="ProgressTimeouts"/>; this is the default.</summary>
    public TimeSpan ProgressTimeout { get; set; } = TimeSpan.FromMinutes(30);
    /// <summary>The no-progress limit of a stage kind, by its name (e.g. a slow teacher's first step).</summary>
    public Dictionary<string, TimeSpan> ProgressTimeouts { get; set; } = [];
    /// <summary>A dispatched stage not leased within this is sent again.</summary>
    public TimeSpan DispatchTimeout { get; set; } = TimeSpan.FromSeconds(30);
    public TimeSpan ReconcileInterval { get; set; } = TimeSpan.FromSeconds(5);
    /// <summary>Tries of a stage before it fails the run (transient failures and lost leases count).</summary>
    public int MaxAttempts { get; set; } = 3;
    /// <summary>Backoff before retry n is this × 2^(n−1).</summary>
    public TimeSpan RetryBackoff { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Create and migrate the metadata store at start.</summary>
    public bool MigrateOnStart { get; set; } = true;
    /// <summary>The toy teacher used when a toy recipe names no model path; null = the committed one.</summary>
    public string? ToyTeacherDir { get; set; }
    /// <summary>The toy recognizer that measures toy evaluations; null = the committed one.</summary>
    public string? ToyRecognizerDir { get; set; }

    public TelemetryOptions Telemetry { get; set; } = new();
    /// <summary>A file the worker touches while it is healthy (<see cref="WorkerHealth"/>), for container probes; null = none.</summary>
    public string? HealthFile { get; set; }

    public bool Serves(string role) => Roles.Contains(role);

    public TimeSpan ProgressTimeoutOf(string kind) => ProgressTimeouts.GetValueOrDefault(kind, ProgressTimeout);

    /// <summary>Checks the options; roles against <paramref name="catalogue"/>'s (default: the built-in stage kinds).</summary>
    public WorkerOptions Validate(StageCatalogue? catalogue = null)
    {
        var known = (catalogue ?? StageCatalogue.Default()).Roles;
        foreach (var role in Roles)
            if (!known.Contains(role))
                throw new ArgumentException($"worker roles: unknown role '{role}'; expected any of {string.Join(", ", known)}");
        if (Transport is not (InMemory or RabbitMqTransport))
            throw new ArgumentException($"worker transport: expected '{InMemory}' or '{RabbitMqTransport}', got '{Transport}'");
        if (Transport == RabbitMqTransport && RabbitMq.Username.Length == 0)
            throw new ArgumentException("worker transport rabbitmq: no RabbitMQ user given (amqp://user:pass@host:port/vhost)");
        if (Devices.Count == 0) throw new ArgumentException("worker devices: at least one device is needed (e.g. cpu)");
        if (MaxAttempts < 1) throw new ArgumentException($"worker max attempts: must be at least 1, got {MaxAttempts}");
        foreach (var (name, value) in new[] { ("heartbeat interval", HeartbeatInterval), ("lease timeout", LeaseTimeout),
                     ("dispatch timeout", DispatchTimeout), ("reconcile interval", ReconcileInterval),
                     ("progress timeout", ProgressTimeout) })
            if (value <= TimeSpan.Zero) throw new ArgumentException($"worker {name}: must be positive, got {value}");
        foreach (var (kind, value) in ProgressTimeouts)
            if (value <= TimeSpan.Zero) throw new ArgumentException($"worker progress timeout of '{kind}': must be positive, got {value}");
        if (LeaseTimeout <= HeartbeatInterval)
            throw new ArgumentException($"worker lease timeout ({LeaseTimeout}) must exceed the heartbeat interval ({HeartbeatInterval})");
        return this;
    }

    /// <summary>Reads the options from a configuration section (keys as the properties; lists comma-separated; Threads =
    /// <see cref="TensorThreads"/>;
    /// timings in seconds: HeartbeatSeconds, LeaseTimeoutSeconds, DispatchTimeoutSeconds, ReconcileSeconds,
    /// RetryBackoffSeconds, ProgressTimeoutSeconds, ProgressTimeouts as kind=seconds pairs;
    /// RabbitMq as an amqp:// URI; Store:Provider and Store:ConnectionString).</summary>
    public static WorkerOptions FromConfiguration(IConfiguration section)
    {
        var o = new WorkerOptions();
        List<string>? List(string key) => section[key] is { Length: > 0 } v
            ? [.. v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)] : null;
        TimeSpan? Seconds(string key) => section[key] is { Length: > 0 } v
            ? TimeSpan.FromSeconds(double.Parse(v, CultureInfo.InvariantCulture)) : null;
        o.Roles = List("Roles") ?? o.Roles;
        o.Transport = section["Transport"] ?? o.Transport;
        if (section["RabbitMq"] is { Length: > 0 } uri) o.RabbitMq = RabbitMqOptions.FromUri(uri);
        o.Store = new MetadataStoreOptions
        {
            Provider = section["Store:Provider"] ?? o.Store.Provider,
            ConnectionString = section["Store:ConnectionString"] ?? o.Store.ConnectionString,
        };
        o.ArtifactRoot = section["ArtifactRoot"] ?? o.ArtifactRoot;
        o.Devices = List("Devices") ?? o.Devices;
        o.WorkerId = section["WorkerId"] ?? o.WorkerId;
        o.HeartbeatInterval = Seconds("HeartbeatSeconds") ?? o.HeartbeatInterval;
        o.LeaseTimeout = Seconds("LeaseTimeoutSeconds") ?? o.LeaseTimeout;
        o.DispatchTimeout = Seconds("DispatchTimeoutSeconds") ?? o.DispatchTimeout;
        o.ReconcileInterval = Seconds("ReconcileSeconds") ?? o.ReconcileInterval;
        o.RetryBackoff = Seconds("RetryBackoffSeconds") ?? o.RetryBackoff;
        o.ProgressTimeout = Seconds("ProgressTimeoutSeconds") ?? o.ProgressTimeout;
        foreach (var pair in List("ProgressTimeouts") ?? [])
        {
            var kv = pair.Split('=', 2, StringSplitOptions.TrimEntries);
            if (kv.Length != 2 || !double.TryParse(kv[1], CultureInfo.InvariantCulture, out var seconds))
                throw new ArgumentException($"worker progress timeouts: expected kind=seconds, got '{pair}'");
            o.ProgressTimeouts[kv[0]] = TimeSpan.FromSeconds(seconds);
        }
        if (section["Threads"] is { Length: > 0 } threads) o.TensorThreads = int.Parse(threads, CultureInfo.InvariantCulture);
        if (section["MaxAttempts"] is { Length: > 0 } max) o.MaxAttempts = int.Parse(max, CultureInfo.InvariantCulture);
        if (section["MigrateOnStart"] is { Length: > 0 } migrate) o.MigrateOnStart = bool.Parse(migrate);
        o.ToyTeacherDir = section["ToyTeacherDir"] ?? o.ToyTeacherDir;
        o.ToyRecognizerDir = section["ToyRecognizerDir"] ?? o.ToyRecognizerDir;
        o.HealthFile = section["HealthFile"] is { Length: > 0 } health ? health : o.HealthFile;
        o.Telemetry = new TelemetryOptions
        {
            Console = section["Telemetry:Console"] is { Length: > 0 } c && bool.Parse(c),
            OtlpEndpoint = section["Telemetry:OtlpEndpoint"],
        };
        return o.Validate();
    }
}

/// <summary>Where RabbitMQ is, who to log in as (always given: no silent guest account), and the type of the roles'
/// queues there.</summary>
public sealed class RabbitMqOptions
{
    public const string ClassicQueues = "classic";
    public const string QuorumQueues = "quorum";
    /// <summary>The address's query parameter that names <see cref="QueueType"/>.</summary>
    public const string QueueTypeParameter = "queue-type";

    public string Host { get; set; } = "localhost";
    public ushort Port { get; set; } = 5672;
    public string Username { get; set; } = "";
    public string Password { get; set; } = "";
    public string VirtualHost { get; set; } = "/";
    /// <summary>classic (the default: one broker node) or quorum (deployments: replicated queues that survive a broker
    /// node). It travels with the address (<c>?queue-type=quorum</c>), so every process given a deployment's address
    /// declares its queues alike (<see cref="RoleQueues"/>).</summary>
    public string QueueType { get; set; } = ClassicQueues;

    public bool Quorum => QueueType == QuorumQueues;

    /// <summary>amqp://user:pass@host:port/vhost[?queue-type=classic|quorum] (vhost "%2F" or empty = "/"); the user and
    /// password are required. Errors show the address with its password masked.</summary>
    public static RabbitMqOptions FromUri(string uri)
    {
        if (!Uri.TryCreate(uri, UriKind.Absolute, out var u) || u.Scheme is not ("amqp" or "rabbitmq"))
            throw new ArgumentException($"RabbitMQ address: expected amqp://user:pass@host:port/vhost, got '{Redact(uri)}'");
        var user = u.UserInfo.Split(':', 2);
        if (user[0].Length == 0 || user.Length < 2)
            throw new ArgumentException($"RabbitMQ address '{Redact(uri)}' names no user and password: " +
                                        "give them as amqp://user:pass@host:port/vhost");
        var vhost = Uri.UnescapeDataString(u.AbsolutePath.TrimStart('/'));
        var queueType = ClassicQueues;
        foreach (var parameter in u.Query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var (key, value) = parameter.Split('=', 2) is [var k, var v] ? (k, Uri.UnescapeDataString(v)) : (parameter, "");
            if (key != QueueTypeParameter)
                throw new ArgumentException($"RabbitMQ address: unknown parameter '{key}' (known: {QueueTypeParameter})");
            queueType = value is ClassicQueues or QuorumQueues ? value : throw new ArgumentException(
                $"RabbitMQ address: {QueueTypeParameter} must be {ClassicQueues} or {QuorumQueues}, got '{value}'");
        }
        return new RabbitMqOptions
        {
            Host = u.Host,
            Port = u.IsDefaultPort || u.Port < 0 ? (ushort)5672 : (ushort)u.Port,
            Username = Uri.UnescapeDataString(user[0]),
            Password = Uri.UnescapeDataString(user[1]),
            VirtualHost = vhost.Length == 0 ? "/" : vhost,
            QueueType = queueType,
        };
    }

    /// <summary>The address with the password of its user part (scheme://user:password@…) masked, parsed or not.</summary>
    public static string Redact(string uri)
    {
        int scheme = uri.IndexOf("://", StringComparison.Ordinal);
        int start = scheme < 0 ? 0 : scheme + 3;
        int at = uri.LastIndexOf('@');
        if (at < start) return uri;
        int colon = uri.IndexOf(':', start);
        return colon < 0 || colon > at ? uri : $"{uri[..(colon + 1)]}***{uri[at..]}";
    }
}

/// <summary>Traces: exported only when configured.</summary>
public sealed class TelemetryOptions
{
    /// <summary>Write spans to the console.</summary>
    public bool Console { get; set; }
    /// <summary>Send spans to an OTLP collector (e.g. http://localhost:4317).</summary>
    public string? OtlpEndpoint { get; set; }
}
