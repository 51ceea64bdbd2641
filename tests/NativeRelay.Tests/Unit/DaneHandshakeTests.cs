using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using NativeRelay.Routing;
using NativeRelay.TlsPolicies;
using NativeRelay.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace NativeRelay.Tests.Unit;

/// <summary>The DANE check inside a real TLS handshake on loopback: what the callback sees of the peer's chain.</summary>
public sealed class DaneHandshakeTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Dane_ta_matches_an_issuing_ca_the_server_sends_in_its_handshake()
    {
        using var pki = new TestPki();
        using var issuing = pki.Intermediate();
        using var leaf = pki.Issue(["mx.daneta.test"], issuer: issuing);
        var check = new PeerCertificateCheck(TlsPolicy.Opportunistic, "mx.daneta.test", CertificateVerifier.SystemOnly,
            dane: [DaneTests.Record(2, 1, 1, issuing)]);
        int extra = -1, elements = -1;

        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var serverTask = Task.Run(async () =>
        {
            using var client = await listener.AcceptTcpClientAsync();
            await using var ssl = new SslStream(client.GetStream());
            await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificateContext = SslStreamCertificateContext.Create(leaf, new X509Certificate2Collection(issuing), offline: true),
            });
        });
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, ((IPEndPoint)listener.LocalEndpoint).Port);
        await using var clientSsl = new SslStream(tcp.GetStream());
        await clientSsl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "mx.daneta.test",
            RemoteCertificateValidationCallback = (s, c, chain, e) =>
            {
                extra = chain?.ChainPolicy.ExtraStore.Count ?? -2;
                elements = chain?.ChainElements.Count ?? -2;
                return check.Validate(s, c, chain, e);
            },
        });
        await serverTask;
        output.WriteLine($"extra store {extra}, chain elements {elements}, problem {check.Problem}");
        Assert.Equal(CertificateProblem.None, check.Problem);
        Assert.Equal("dane", check.VerifiedBy);
    }
}
