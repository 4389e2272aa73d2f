using System.Diagnostics;

namespace HyperSd.Testing;

/// <summary>
/// A real PostgreSQL server for integration tests. Uses the connection string in HYPERSD_TEST_POSTGRES if set;
/// otherwise starts (or reuses) a throwaway cluster in /tmp/hypersd-pg on 127.0.0.1:55432 with trust auth.
/// .ci/start-postgres.sh does the same from the shell; both serialise on the same flock.
/// </summary>
public static class PostgresServer
{
    public const string EnvironmentVariable = "HYPERSD_TEST_POSTGRES";
    public const string ClusterDirectory = "/tmp/hypersd-pg";
    public const int Port = 55432;
    private const string LockFile = "/tmp/hypersd-pg.lock";

    private static readonly Lazy<string> connectionString = new(Start);

    /// <summary>Connection string to the server's maintenance database; starts the server on first use.</summary>
    public static string ConnectionString => connectionString.Value;

    private static string Start()
    {
        var configured = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(configured))
            return configured;

        var bin = FindBinaries();
        var local = $"Host=127.0.0.1;Port={Port};Username=postgres;Database=postgres";
        if (IsReady(bin))
            return local;

        using var serverLock = AcquireLock();
        if (IsReady(bin))
            return local;
        // The server refuses to run as root: create and run the cluster as the postgres OS user then.
        RunAsOwner("mkdir", "-p", ClusterDirectory);
        var data = Path.Combine(ClusterDirectory, "data");
        if (!File.Exists(Path.Combine(data, "PG_VERSION")))
            RunAsOwner(Path.Combine(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync");
        var log = Path.Combine(ClusterDirectory, "server.log");
        try
        {
            RunAsOwner(Path.Combine(bin, "pg_ctl"), "-D", data, "-l", log, "-w", "start", "-o",
                $"-p {Port} -k {ClusterDirectory} -c listen_addresses=127.0.0.1 -c fsync=off");
        }
        catch (InvalidOperationException e) when (File.Exists(log))
        {
            throw new InvalidOperationException($"{e.Message}\nServer log {log}:\n{File.ReadAllText(log)}", e);
        }
        if (!IsReady(bin))
            throw new InvalidOperationException($"PostgreSQL started but 127.0.0.1:{Port} is not ready; see {log}.");
        return local;
    }

    private static string FindBinaries()
    {
        var root = "/usr/lib/postgresql";
        var bin = Directory.Exists(root)
            ? Directory.GetDirectories(root)
                .Select(d => Path.Combine(d, "bin"))
                .Where(d => File.Exists(Path.Combine(d, "initdb")))
                .OrderByDescending(d => int.TryParse(Path.GetFileName(Path.GetDirectoryName(d)), out var v) ? v : 0)
                .FirstOrDefault()
            : null;
        return bin ?? throw new InvalidOperationException(
            $"PostgreSQL server binaries (initdb, pg_ctl) not found under {root}/<version>/bin. " +
            $"Install them with `apt-get install postgresql`, or set {EnvironmentVariable} to a connection string.");
    }

    private static bool IsReady(string bin) =>
        Run(Path.Combine(bin, "pg_isready"), ["-q", "-h", "127.0.0.1", "-p", Port.ToString()]).ExitCode == 0;

    /// <summary>flock on a shared file, so parallel test processes and the CI script start one server.</summary>
    private static FileStream AcquireLock()
    {
        var deadline = DateTime.UtcNow.AddMinutes(2);
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

    private static void RunAsOwner(string program, params string[] args)
    {
        var (exe, argv) = Environment.UserName == "root"
            ? ("runuser", new[] { "-u", "postgres", "--", program }.Concat(args).ToArray())
            : (program, args);
        var (exitCode, output) = Run(exe, argv);
        if (exitCode != 0)
            throw new InvalidOperationException($"`{exe} {string.Join(' ', argv)}` exited with {exitCode}:\n{output}");
    }

    private static (int ExitCode, string Output) Run(string program, string[] args)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout + stderr.Result);
    }
}
