using HyperSd.Contracts;
using HyperSd.Services.Stages;
using MassTransit;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace HyperSd.Services.Hosting;

/// <summary>
/// Each role's queue on the bus, declared alike by every process, and the address commands for a role are sent to.
/// <para>Classic queues (the default): commands go to <c>queue:role</c>, and MassTransit's sender declares the queue too,
/// without arguments, so a command sent before any worker of its role started waits in the queue.</para>
/// <para>Quorum queues (<see cref="RabbitMqOptions.Quorum"/>, for deployments): a declaration without arguments of a queue
/// that exists as a quorum queue is refused (PRECONDITION_FAILED, the send retried forever), and MassTransit's send
/// topology cannot carry queue arguments. So at start every process declares every role's exchange, quorum queue and
/// binding exactly as a worker's receive endpoint does (<see cref="ConfigureReceiveEndpoint"/>), and commands go to
/// <c>exchange:role</c>, which declares only the exchange. A command for a role no worker serves yet (a deployment
/// scaled to zero) still waits in its queue, where a queue-depth autoscaler sees it.</para>
/// </summary>
public sealed class RoleQueues(WorkerOptions options, StageCatalogue catalogue, ILogger<RoleQueues> logger) : IHostedService
{
    /// <summary>Between tries to reach the broker at start.</summary>
    static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(2);

    bool Quorum => options.Transport == WorkerOptions.RabbitMqTransport && options.RabbitMq.Quorum;

    /// <summary>Where commands for <paramref name="role"/> go.</summary>
    public Uri Address(string role) => Quorum ? new Uri($"exchange:{role}") : Roles.Queue(role);

    /// <summary>A role's receive endpoint: its queue as a quorum queue where configured.</summary>
    public void ConfigureReceiveEndpoint(IReceiveEndpointConfigurator endpoint)
    {
        if (Quorum && endpoint is IRabbitMqReceiveEndpointConfigurator rabbit) rabbit.SetQuorumQueue();
    }

    /// <summary>The bus: faulted and skipped commands go to quorum queues too (<c>role_error</c>, <c>role_skipped</c>).</summary>
    public void ConfigureBus(IRabbitMqBusFactoryConfigurator bus)
    {
        if (!Quorum) return;
        bus.SendTopology.ConfigureErrorSettings = s => s.SetQuorumQueue();
        bus.SendTopology.ConfigureDeadLetterSettings = s => s.SetQuorumQueue();
    }

    /// <summary>Declares every role's queue (quorum only; classic queues need nothing before the bus starts). Waits for
    /// the broker: in a deployment it may start after the workers.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (!Quorum) return;
        while (true)
        {
            try
            {
                await DeclareAsync(cancellationToken);
                return;
            }
            catch (BrokerUnreachableException e)
            {
                logger.LogWarning("RabbitMQ at {Host}:{Port} unreachable ({Error}); retrying in {Delay}",
                    options.RabbitMq.Host, options.RabbitMq.Port, e.InnerException?.Message ?? e.Message, RetryDelay);
                await Task.Delay(RetryDelay, cancellationToken);
            }
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    async Task DeclareAsync(CancellationToken ct)
    {
        var r = options.RabbitMq;
        var factory = new ConnectionFactory
        {
            HostName = r.Host, Port = r.Port, UserName = r.Username, Password = r.Password, VirtualHost = r.VirtualHost,
            ClientProvidedName = $"{options.WorkerId} queue declaration",
        };
        await using var connection = await factory.CreateConnectionAsync(ct);
        await using var channel = await connection.CreateChannelAsync(cancellationToken: ct);
        var arguments = new Dictionary<string, object?> { [RabbitMQ.Client.Headers.XQueueType] = RabbitMqOptions.QuorumQueues };
        foreach (var role in catalogue.Roles)
        {
            // MassTransit's receive endpoint topology: a durable fanout exchange named as the queue, bound to it
            await channel.ExchangeDeclareAsync(role, ExchangeType.Fanout, durable: true, autoDelete: false, cancellationToken: ct);
            await channel.QueueDeclareAsync(role, durable: true, exclusive: false, autoDelete: false, arguments, cancellationToken: ct);
            await channel.QueueBindAsync(role, role, "", cancellationToken: ct);
        }
        logger.LogInformation("declared quorum queues {Roles} on {VirtualHost}", string.Join(",", catalogue.Roles), r.VirtualHost);
    }
}
