using HyperSd.Services.Hosting;

namespace HyperSd.Services.Tests;

public sealed class RabbitMqOptionsTests
{
    [Theory]
    [InlineData("amqp://hyper:s3cret-pw@host:notaport/")]
    [InlineData("http://hyper:s3cret-pw@host:5672/")]
    [InlineData("amqp://hyper:s3cret-pw@@host:5672/")]
    public void A_malformed_address_is_refused_without_printing_its_password(string uri)
    {
        var e = Assert.Throws<ArgumentException>(() => RabbitMqOptions.FromUri(uri));
        Assert.DoesNotContain("s3cret-pw", e.Message);
        Assert.Contains("hyper:***@", e.Message);
    }

    [Theory]
    [InlineData("amqp://host:5672/")]
    [InlineData("amqp://hyper@host:5672/")]
    public void An_address_without_credentials_is_refused_rather_than_logging_in_as_guest(string uri) =>
        Assert.Contains("no user and password", Assert.Throws<ArgumentException>(() => RabbitMqOptions.FromUri(uri)).Message);

    [Fact]
    public void Credentials_and_vhost_are_read_from_the_address()
    {
        var o = RabbitMqOptions.FromUri("amqp://hyper:p%40ss@broker:5673/runs");
        Assert.Equal(("hyper", "p@ss", "broker", (ushort)5673, "runs"), (o.Username, o.Password, o.Host, o.Port, o.VirtualHost));
    }

    [Fact]
    public void The_rabbitmq_transport_needs_a_user() =>
        Assert.Throws<ArgumentException>(() => new WorkerOptions { Transport = WorkerOptions.RabbitMqTransport }.Validate());
}
