using HyperSd.Services.Hosting;

namespace HyperSd.Deploy.Tests;

/// <summary>The queue type travels with the broker's address, so every process given a deployment's address declares
/// the roles' queues alike.</summary>
public sealed class RabbitMqAddressTests
{
    [Fact]
    public void An_address_without_a_queue_type_means_classic_queues()
    {
        var options = RabbitMqOptions.FromUri("amqp://user:p%40ss@broker:5673/hypersd");
        Assert.Equal(("broker", 5673, "user", "p@ss", "hypersd"), (options.Host, (int)options.Port, options.Username, options.Password,
            options.VirtualHost));
        Assert.Equal(RabbitMqOptions.ClassicQueues, options.QueueType);
        Assert.False(options.Quorum);
    }

    [Fact]
    public void Queue_type_quorum_in_the_address_means_quorum_queues()
    {
        var options = RabbitMqOptions.FromUri("amqp://user:pass@broker/hypersd?queue-type=quorum");
        Assert.True(options.Quorum);
        Assert.Equal("hypersd", options.VirtualHost);
    }

    [Theory]
    [InlineData("amqp://broker/?queue-type=stream", "queue-type must be classic or quorum")]
    [InlineData("amqp://broker/?heartbeat=10", "unknown parameter 'heartbeat'")]
    public void Other_queue_types_and_parameters_are_refused(string uri, string message) =>
        Assert.Contains(message, Assert.Throws<ArgumentException>(() => RabbitMqOptions.FromUri(uri)).Message);

    [Fact]
    public void The_worker_reads_the_queue_type_with_the_address()
    {
        var options = WorkerConfiguration.Options([
            new("HyperSd__Transport", "rabbitmq"), new("HyperSd__RabbitMq", "amqp://u:p@rabbitmq:5672/hypersd?queue-type=quorum"),
        ]);
        Assert.True(options.RabbitMq.Quorum);
    }
}
