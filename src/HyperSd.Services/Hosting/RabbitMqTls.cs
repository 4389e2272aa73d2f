using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using MassTransit;
using RabbitMQ.Client;

namespace HyperSd.Services.Hosting;

/// <summary>amqps: TLS 1.2/1.3 to the broker, its certificate checked against its host name and trusted by the system or by
/// the configured CA (<see cref="RabbitMqOptions.CaFile"/>) — never "accept any certificate".</summary>
public static class RabbitMqTls
{
    const SslProtocols Protocols = SslProtocols.Tls12 | SslProtocols.Tls13;

    /// <summary>MassTransit's connections (the bus).</summary>
    public static void Configure(IRabbitMqSslConfigurator ssl, RabbitMqOptions options)
    {
        ssl.ServerName = options.Host;
        ssl.Protocol = Protocols;
        if (Validation(options) is { } validation) ssl.CertificateValidationCallback = validation;
    }

    /// <summary>RabbitMQ.Client's own connections (<see cref="RabbitMqOptions.ConnectionFactory"/>), alike.</summary>
    public static SslOption SslOption(RabbitMqOptions options) => new()
    {
        Enabled = options.Tls, ServerName = options.Host, Version = Protocols, CertificateValidationCallback = Validation(options),
    };

    /// <summary>Trust in <see cref="RabbitMqOptions.CaFile"/>'s CA; null = the system's checks alone.</summary>
    static RemoteCertificateValidationCallback? Validation(RabbitMqOptions options)
    {
        if (options.CaFile is not { } file) return null;
        var ca = X509Certificate2.CreateFromPem(File.ReadAllText(file));
        return (_, certificate, _, errors) => TrustedBy(ca, certificate, errors);
    }

    /// <summary>True when the certificate passed the system's checks, or failed only on its chain and chains to
    /// <paramref name="ca"/> (a host name mismatch or a missing certificate is refused either way).</summary>
    public static bool TrustedBy(X509Certificate2 ca, X509Certificate? certificate, SslPolicyErrors errors)
    {
        if (errors == SslPolicyErrors.None) return true;
        if (certificate is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != 0) return false;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck; // a private CA publishes no revocation list here
        using var leaf = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        return chain.Build(leaf);
    }
}
