using System.Diagnostics;
using System.Text.Json;

namespace HyperSd.Testing;

/// <summary>
/// A real RabbitMQ broker for integration tests. Uses the amqp:// URI in HYPERSD_TEST_RABBITMQ if set; otherwise starts
/// (or reuses) the local node on 127.0.0.1:5672 as .ci/start-rabbitmq.sh does (both serialise on the same lock file).
/// Virtual hosts, queue depths and restarts go through <c>rabbitmqctl</c>, so the broker must be the local node.
/// </summary>
public static class RabbitMqServer
{
    public const string EnvironmentVariable = "HYPERSD_TEST_RABBITMQ";
    const string LockFile = "/tmp/hypersd-rabbitmq.lock";
    const string ConfigFile = "/etc/rabbitmq/rabbitmq.conf";
    const string LocalUri = "amqp://guest:guest@127.0.0.1:5672/";

    static readonly Lazy<Uri> uri = new(Start);

    /// <summary>The broker's URI with the default virtual host; starts the broker on first use.</summary>
    public static Uri Uri => uri.Value;

    static Uri Start()
    {
        var configured = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(configured))
            return new Uri(configured);
        if (IsRunning())
            return new Uri(LocalUri);

        using var serverLock = AcquireLock();
        if (IsRunning())
            return new Uri(LocalUri);
        if (!File.Exists(ConfigFile) || !File.ReadAllLines(ConfigFile).Any(l => l.StartsWith("listeners.tcp.default", StringComparison.Ordinal)))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(ConfigFile)!);
            File.AppendAllText(ConfigFile, "listeners.tcp.default = 127.0.0.1:5672\nloopback_users.guest = true\n");
        }
        // Debian's package does not start the broker (no init system): run it detached, Erlang distribution on loopback.
        var (exitCode, output) = Run("rabbitmq-server", ["-detached"], new Dictionary<string, string>
        {
            ["ERL_EPMD_ADDRESS"] = "127.0.0.1",
            ["RABBITMQ_NODE_IP_ADDRESS"] = "127.0.0.1",
            ["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = "-kernel inet_dist_use_interface {127,0,0,1}",
        });
        if (exitCode != 0)
            throw new InvalidOperationException($"`rabbitmq-server -detached` exited with {exitCode}:\n{output}");
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (!IsRunning())
        {
            if (DateTime.UtcNow > deadline)
                throw new InvalidOperationException("RabbitMQ did not answer `rabbitmq-diagnostics ping` within 90 s; see /var/log/rabbitmq.");
            Thread.Sleep(1000);
        }
        return new Uri(LocalUri);
    }

    static bool IsRunning()
    {
        try
        {
            return Run("rabbitmq-diagnostics", ["-q", "ping"]).ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException(
                $"rabbitmq-diagnostics not found ({e.Message}). Install the broker with `apt-get install rabbitmq-server`, " +
                $"or set {EnvironmentVariable} to an amqp:// URI of a local node.", e);
        }
    }

    /// <summary>The URI of <paramref name="virtualHost"/> on the broker.</summary>
    public static Uri VirtualHostUri(string virtualHost) => new UriBuilder(Uri) { Path = "/" + Uri.EscapeDataString(virtualHost) }.Uri;

    /// <summary>The user the tests connect as (from the URI).</summary>
    public static string User => Uri.UserInfo.Split(':')[0] is { Length: > 0 } user ? Uri.UnescapeDataString(user) : "guest";

    /// <summary>Runs <c>rabbitmqctl</c> against the local node; throws with its output when it fails.</summary>
    public static string Ctl(params string[] args)
    {
        _ = Uri;
        var (exitCode, output) = Run("rabbitmqctl", args);
        if (exitCode != 0)
            throw new InvalidOperationException($"`rabbitmqctl {string.Join(' ', args)}` exited with {exitCode}:\n{output}");
        return output;
    }

    /// <summary>Ready messages per queue of <paramref name="virtualHost"/>.</summary>
    public static IReadOnlyDictionary<string, int> QueueDepths(string virtualHost)
    {
        var json = Ctl("list_queues", "-q", "-p", virtualHost, "name", "messages", "--formatter", "json");
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.EnumerateArray().ToDictionary(q => q.GetProperty("name").GetString()!, q => q.GetProperty("messages").GetInt32());
    }

    /// <summary>The type (classic, quorum) of each queue of <paramref name="virtualHost"/>.</summary>
    public static IReadOnlyDictionary<string, string> QueueTypes(string virtualHost)
    {
        var json = Ctl("list_queues", "-q", "-p", virtualHost, "name", "type", "--formatter", "json");
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.EnumerateArray().ToDictionary(q => q.GetProperty("name").GetString()!, q => q.GetProperty("type").GetString()!);
    }

    /// <summary>Stops the broker application (every connection drops; durable queues keep their messages).</summary>
    public static void StopApp() => Ctl("stop_app");

    public static void StartApp()
    {
        Ctl("start_app");
        Ctl("await_startup");
    }

    static FileStream AcquireLock()
    {
        // FileShare.None takes flock(2) on Unix, the same lock the shell script takes with flock.
        var deadline = DateTime.UtcNow.AddMinutes(3);
        while (true)
        {
            try
            {
                return new FileStream(LockFile, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(200);
            }
        }
    }

    static (int ExitCode, string Output) Run(string program, string[] args, IReadOnlyDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
            start.ArgumentList.Add(arg);
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
            start.Environment[key] = value;
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout + stderr.Result);
    }
}

/// <summary>
/// A fresh, uniquely named virtual host on <see cref="RabbitMqServer"/> with full permissions for the test user,
/// deleted on dispose: tests in different virtual hosts never see each other's queues.
/// </summary>
public sealed class RabbitMqVirtualHost : IDisposable
{
    public RabbitMqVirtualHost()
    {
        Name = $"hypersd-test-{Guid.NewGuid():N}";
        RabbitMqServer.Ctl("add_vhost", Name);
        RabbitMqServer.Ctl("set_permissions", "-p", Name, RabbitMqServer.User, ".*", ".*", ".*");
        Uri = RabbitMqServer.VirtualHostUri(Name);
    }

    public string Name { get; }

    /// <summary>amqp://user:pass@host:port/&lt;vhost&gt;.</summary>
    public Uri Uri { get; }

    /// <summary>Ready messages per queue.</summary>
    public IReadOnlyDictionary<string, int> QueueDepths() => RabbitMqServer.QueueDepths(Name);

    /// <summary>Each queue's type (classic, quorum).</summary>
    public IReadOnlyDictionary<string, string> QueueTypes() => RabbitMqServer.QueueTypes(Name);

    public void Dispose() => RabbitMqServer.Ctl("delete_vhost", Name);
}
