using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace HyperSd.Services.Tests;

/// <summary>A loopback TCP forwarder to a PostgreSQL server that a test can cut (open connections dropped, new ones
/// refused) and restore: a worker's database blip or lost network, while the server itself stays up for others.</summary>
public sealed class TcpProxy : IDisposable
{
    readonly string host;
    readonly int port;
    readonly List<TcpClient> open = [];
    TcpListener? listener;
    readonly CancellationTokenSource stop = new();

    public int Port { get; }

    public TcpProxy(string postgres)
    {
        var target = new NpgsqlConnectionStringBuilder(postgres);
        host = target.Host!;
        port = target.Port;
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        Port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        Restore();
    }

    /// <summary>The connection string through the proxy (no pooling, so a cut connection is not reused later).</summary>
    public string ConnectionString(string postgres, string? user = null)
    {
        var b = new NpgsqlConnectionStringBuilder(postgres) { Host = "127.0.0.1", Port = Port, Pooling = false, Timeout = 3 };
        if (user is not null) b.Username = user;
        return b.ConnectionString;
    }

    public void Restore()
    {
        if (listener is not null) return;
        listener = new TcpListener(IPAddress.Loopback, Port);
        listener.Start();
        var l = listener;
        _ = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                TcpClient client;
                try
                {
                    client = await l.AcceptTcpClientAsync(stop.Token);
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
                {
                    return;
                }
                var server = new TcpClient();
                await server.ConnectAsync(host, port);
                lock (open) open.AddRange([client, server]);
                _ = Pump(client, server);
                _ = Pump(server, client);
            }
        });
    }

    static async Task Pump(TcpClient from, TcpClient to)
    {
        try
        {
            await from.GetStream().CopyToAsync(to.GetStream());
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
        }
        to.Close();
    }

    /// <summary>Drops every open connection and refuses new ones until <see cref="Restore"/>.</summary>
    public void Cut()
    {
        listener?.Stop();
        listener = null;
        lock (open)
        {
            foreach (var c in open) c.Close();
            open.Clear();
        }
    }

    public void Dispose()
    {
        stop.Cancel();
        Cut();
    }
}
