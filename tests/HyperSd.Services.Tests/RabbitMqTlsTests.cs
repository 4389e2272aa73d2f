using System.Security.Authentication;
using System.Text.Json;
using HyperSd.Contracts;
using HyperSd.Services.Hosting;
using HyperSd.Services.Stages;
using HyperSd.Testing;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using RabbitMQ.Client.Exceptions;

namespace HyperSd.Services.Tests;

/// <summary>amqps against the local broker's TLS listener (127.0.0.1:5671, certificate for localhost signed by a private
/// CA; .ci/start-rabbitmq.sh sets it up): the workers' bus and their quorum queue declaration trust the CA given as
/// RabbitMqCaFile, and without it the broker's certificate is refused.</summary>
public sealed class RabbitMqTlsTests : IDisposable
{
    readonly TestStore store = new();
    readonly RabbitMqVirtualHost vhost = new();

    public void Dispose()
    {
        vhost.Dispose();
        store.Dispose();
    }

    public sealed record TlsPing(Guid Id);

    RabbitMqOptions Tls(string? caFile)
    {
        var options = RabbitMqOptions.FromUri($"{vhost.TlsUri}?{RabbitMqOptions.QueueTypeParameter}={RabbitMqOptions.QuorumQueues}");
        options.CaFile = caFile;
        return options;
    }

    [Fact]
    public async Task A_message_is_published_and_consumed_over_tls_with_the_private_ca()
    {
        var options = store.WorkerOptions(o =>
        {
            o.Roles = [];
            o.Transport = WorkerOptions.RabbitMqTransport;
            o.RabbitMq = Tls(RabbitMqServer.CaFile);
        });
        using var host = TestHosts.Start(options, StageCatalogue.Default());
        var bus = host.Services.GetRequiredService<IBus>();
        var received = new TaskCompletionSource<TlsPing>(TaskCreationOptions.RunContinuationsAsynchronously);
        var endpoint = bus.ConnectReceiveEndpoint("tls-ping", e => e.Handler<TlsPing>(c =>
        {
            received.TrySetResult(c.Message);
            return Task.CompletedTask;
        }));
        await endpoint.Ready.WaitAsync(TimeSpan.FromSeconds(30));

        var ping = new TlsPing(Guid.NewGuid());
        await bus.Publish(ping);
        Assert.Equal(ping, await received.Task.WaitAsync(TimeSpan.FromSeconds(30)));
        // the roles' quorum queues were declared through RabbitMQ.Client over TLS too, and the broker saw only TLS connections
        Assert.Equal(RabbitMqOptions.QuorumQueues, vhost.QueueTypes()[Roles.Orchestrator]);
        // list_connections lists every vhost's (it takes no -p): other tests' plain connections are filtered out by vhost
        using var connections = JsonDocument.Parse(RabbitMqServer.Ctl("list_connections", "-q", "vhost", "ssl", "ssl_protocol",
            "--formatter", "json"));
        var ours = connections.RootElement.EnumerateArray().Where(c => c.GetProperty("vhost").GetString() == vhost.Name).ToList();
        Assert.NotEmpty(ours);
        Assert.All(ours, c =>
        {
            Assert.True(c.GetProperty("ssl").GetBoolean());
            Assert.Matches("^tlsv1\\.[23]$", c.GetProperty("ssl_protocol").GetString());
        });
    }

    [Fact]
    public async Task Without_the_ca_the_brokers_certificate_is_refused_as_untrusted()
    {
        var e = await Assert.ThrowsAsync<BrokerUnreachableException>(
            () => Tls(caFile: null).ConnectionFactory("tls-test without the CA").CreateConnectionAsync());
        var refused = Assert.IsType<AuthenticationException>(Inner(e).OfType<AuthenticationException>().FirstOrDefault(), exactMatch: false);
        // the TLS handshake fails on the broker's certificate (its chain ends at a root the system does not trust)
        Assert.Contains("remote certificate was rejected", refused.Message);

        // with the CA the same address connects
        await using var connection = await Tls(RabbitMqServer.CaFile).ConnectionFactory("tls-test with the CA").CreateConnectionAsync();
        Assert.True(connection.IsOpen);
    }

    /// <summary>The exception and every exception inside it (the client tries each address of the host).</summary>
    static IEnumerable<Exception> Inner(Exception e) =>
        e is AggregateException all ? all.InnerExceptions.SelectMany(Inner).Prepend(e)
        : e.InnerException is { } inner ? Inner(inner).Prepend(e) : [e];
}
