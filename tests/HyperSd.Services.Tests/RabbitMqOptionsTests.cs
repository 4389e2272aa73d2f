using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using HyperSd.Services.Hosting;
using Microsoft.Extensions.Configuration;

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

    [Fact]
    public void An_amqps_address_means_tls_on_5671_unless_a_port_is_given()
    {
        var tls = RabbitMqOptions.FromUri("amqps://hyper:pw@broker/runs");
        Assert.Equal((true, RabbitMqOptions.TlsPort), (tls.Tls, tls.Port));
        Assert.Equal((ushort)6671, RabbitMqOptions.FromUri("amqps://hyper:pw@broker:6671/runs").Port);
        Assert.False(RabbitMqOptions.FromUri("amqp://hyper:pw@broker/runs").Tls);
    }

    static WorkerOptions FromSettings(params (string Key, string Value)[] settings) => WorkerOptions.FromConfiguration(
        new ConfigurationBuilder().AddInMemoryCollection(settings.Select(s => KeyValuePair.Create(s.Key, (string?)s.Value))).Build());

    [Fact]
    public void Credentials_can_come_from_files_a_mounted_secret_names()
    {
        var dir = Directory.CreateTempSubdirectory("hypersd-secrets-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "rabbitmq"), "amqps://hyper:fr0m-file@broker/runs\n");
            File.WriteAllText(Path.Combine(dir, "store"), "Host=db;Database=hypersd;Username=u;Password=fr0m-file\n");
            var o = FromSettings(("Transport", "rabbitmq"), ("RabbitMqFile", Path.Combine(dir, "rabbitmq")),
                ("Store:Provider", "postgres"), ("Store:ConnectionStringFile", Path.Combine(dir, "store")));
            Assert.Equal(("hyper", "fr0m-file", true), (o.RabbitMq.Username, o.RabbitMq.Password, o.RabbitMq.Tls));
            Assert.Equal("Host=db;Database=hypersd;Username=u;Password=fr0m-file", o.Store.ConnectionString);

            Assert.Contains("not both", Assert.Throws<ArgumentException>(() => FromSettings(("Transport", "rabbitmq"),
                ("RabbitMq", "amqp://a:b@h/"), ("RabbitMqFile", Path.Combine(dir, "rabbitmq")))).Message);
            Assert.Contains("RabbitMqFile: no file", Assert.Throws<ArgumentException>(() => FromSettings(("Transport", "rabbitmq"),
                ("RabbitMqFile", Path.Combine(dir, "missing")))).Message);
            Assert.Contains("RabbitMqCaFile: no file", Assert.Throws<ArgumentException>(() => FromSettings(("Transport", "rabbitmq"),
                ("RabbitMqFile", Path.Combine(dir, "rabbitmq")), ("RabbitMqCaFile", Path.Combine(dir, "ca.pem")))).Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_private_ca_is_trusted_for_the_brokers_certificate_and_nothing_else()
    {
        var now = DateTimeOffset.UtcNow;
        using var ca = Authority("CN=hypersd-test-ca", now);
        using var other = Authority("CN=someone-else", now);
        using var leafKey = ECDsa.Create();
        var request = new CertificateRequest("CN=broker", leafKey, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        using var leaf = request.Create(ca, now.AddDays(-1), now.AddDays(10), [1, 2, 3, 4]);

        Assert.True(RabbitMqTls.TrustedBy(ca, leaf, SslPolicyErrors.RemoteCertificateChainErrors));
        Assert.False(RabbitMqTls.TrustedBy(other, leaf, SslPolicyErrors.RemoteCertificateChainErrors));
        Assert.False(RabbitMqTls.TrustedBy(ca, leaf, SslPolicyErrors.RemoteCertificateNameMismatch | SslPolicyErrors.RemoteCertificateChainErrors));
        Assert.False(RabbitMqTls.TrustedBy(ca, null, SslPolicyErrors.RemoteCertificateNotAvailable));
        Assert.True(RabbitMqTls.TrustedBy(other, leaf, SslPolicyErrors.None)); // the system trusts it already
    }

    static X509Certificate2 Authority(string name, DateTimeOffset now)
    {
        using var key = ECDsa.Create();
        var request = new CertificateRequest(name, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        return request.CreateSelfSigned(now.AddDays(-1), now.AddDays(30));
    }
}
