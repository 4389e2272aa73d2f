using System.Diagnostics;
using System.Reflection;
using System.Text;

namespace HyperSd.Integration.Tests;

/// <summary>One <c>hypersd-worker</c> OS process (the build output of src/HyperSd.WorkerHost), its output in a log file.</summary>
public sealed class WorkerProcess : IDisposable
{
    /// <summary>Where the build put hypersd-worker.dll (recorded at build time by the test project).</summary>
    public static string WorkerDll { get; } = BuildOutput("HyperSdWorker");

    /// <summary>Where the build put the hypersd CLI's hypersd.dll.</summary>
    public static string CliDll { get; } = BuildOutput("HyperSdCli");

    static string BuildOutput(string key) =>
        typeof(WorkerProcess).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == key).Value!;

    readonly Process process;
    readonly StreamWriter log;
    readonly TaskCompletionSource started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    bool closed;

    public string Name { get; }
    public string LogPath { get; }
    public int Id => process.Id;
    public bool HasExited => process.HasExited;

    public WorkerProcess(string name, IEnumerable<string> args, IReadOnlyDictionary<string, string> environment, string logPath)
    {
        if (!File.Exists(WorkerDll))
            throw new FileNotFoundException($"hypersd-worker is not built: {WorkerDll} is missing (build src/HyperSd.WorkerHost)", WorkerDll);
        Name = name;
        LogPath = logPath;
        var start = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("exec");
        start.ArgumentList.Add(WorkerDll);
        foreach (var arg in args) start.ArgumentList.Add(arg);
        foreach (var (key, value) in environment) start.Environment[key] = value;
        log = new StreamWriter(logPath, append: true, Encoding.UTF8) { AutoFlush = true };
        log.WriteLine($"--- {name}: dotnet exec {WorkerDll} {string.Join(' ', args)}");
        process = new Process { StartInfo = start, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, e) => Write(e.Data);
        process.ErrorDataReceived += (_, e) => Write(e.Data);
        process.Exited += (_, _) =>
        {
            process.WaitForExit(); // drains the output into the log
            started.TrySetException(new InvalidOperationException($"worker {name} exited with {process.ExitCode} before it started; " +
                                                                  $"log {logPath}:\n{Tail()}"));
        };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    void Write(string? line)
    {
        if (line is null) return;
        lock (log)
            if (!closed) log.WriteLine(line);
        // The host logs this once the bus and its receive endpoints are up (MassTransit waits for them).
        if (line.Contains("Application started", StringComparison.Ordinal)) started.TrySetResult();
    }

    /// <summary>Completes once the worker's host (and so its queues' consumers) has started.</summary>
    public Task WaitStartedAsync(TimeSpan timeout) =>
        started.Task.WaitAsync(timeout).ContinueWith(t =>
        {
            if (t.Exception?.InnerException is TimeoutException)
                throw new TimeoutException($"worker {Name} did not start within {timeout}; log {LogPath}:\n{Tail()}");
            t.GetAwaiter().GetResult();
        }, TaskScheduler.Default);

    /// <summary>SIGKILL: no shutdown code runs, as when a machine dies.</summary>
    public void Kill()
    {
        if (process.HasExited) return;
        process.Kill(entireProcessTree: true);
        process.WaitForExit();
        Write($"--- {Name}: killed (SIGKILL)");
    }

    /// <summary>The last lines of the log, for failure messages.</summary>
    public string Tail(int lines = 40)
    {
        string[] all;
        lock (log)
        {
            using var read = new FileStream(LogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(read);
            all = reader.ReadToEnd().Split('\n');
        }
        return string.Join('\n', all.TakeLast(lines));
    }

    public void Dispose()
    {
        Kill();
        lock (log)
        {
            closed = true;
            log.Dispose();
        }
        process.Dispose();
    }

    /// <summary>Runs the hypersd CLI in <paramref name="workingDir"/> to completion; fails the test on a non-zero exit.</summary>
    public static async Task<string> RunCliAsync(string workingDir, IEnumerable<string> args)
    {
        var start = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = workingDir,
        };
        foreach (var arg in (string[])["exec", CliDll, .. args]) start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"hypersd {string.Join(' ', args)} did not finish within 2 minutes");
        }
        var output = await stdout + await stderr;
        Xunit.Assert.True(process.ExitCode == 0, $"hypersd {string.Join(' ', args)} exited with {process.ExitCode}:\n{output}");
        return output;
    }

    /// <summary>The dotnet host running these tests (DOTNET_HOST_PATH under <c>dotnet test</c>), else dotnet on PATH.</summary>
    public static string DotnetHost() =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host
        : Environment.ProcessPath is { } self && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self
        : "dotnet";
}
