using System.IO.Pipelines;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Net;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>TLS over pipes and the certificate store, in process (no sockets).</summary>
public sealed class TlsTests
{
    /// <summary>Two pipes crossed: what one side writes the other reads.</summary>
    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;
        public PipeWriter Output { get; } = output;
    }

    private static (IDuplexPipe Server, IDuplexPipe Client) CrossedPipes()
    {
        var toServer = new Pipe();
        var toClient = new Pipe();
        return (new Duplex(toServer.Reader, toClient.Writer), new Duplex(toClient.Reader, toServer.Writer));
    }

    [Fact]
    public async Task Handshake_over_pipes_then_data_both_ways()
    {
        using var dir = new TempDir();
        var cert = TestCertificate.Create(dir.Path);
        var store = TlsCertificateStore.Load(new TlsSettings(cert.CertificatePath, cert.KeyPath));
        var (serverPipe, clientPipe) = CrossedPipes();
        await using var clientStream = new SslStream(new DuplexStreamForTest(clientPipe), false, (_, _, _, _) => true);

        var serverTask = TlsTransport.AcceptAsync(serverPipe, store, TimeSpan.FromSeconds(30), CancellationToken.None).AsTask();
        await clientStream.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "relay.test" });
        await using var server = await serverTask;

        Assert.True(server.Protocol is SslProtocols.Tls12 or SslProtocols.Tls13, $"negotiated {server.Protocol}");
        Assert.Equal(cert.Thumbprint, new X509Certificate2(clientStream.RemoteCertificate!).Thumbprint);
        Assert.Matches(@"^using TLSv1\.[23] with cipher TLS_[A-Z0-9_]+$", Encoding.ASCII.GetString(server.Description));

        await clientStream.WriteAsync("EHLO client\r\n"u8.ToArray());
        await clientStream.FlushAsync();
        var read = await server.Input.ReadAsync();
        Assert.Equal("EHLO client\r\n", Encoding.ASCII.GetString(System.Buffers.BuffersExtensions.ToArray(read.Buffer)));
        server.Input.AdvanceTo(read.Buffer.End);

        await server.Output.WriteAsync("250 ok\r\n"u8.ToArray());
        var buffer = new byte[64];
        int n = await clientStream.ReadAsync(buffer);
        Assert.Equal("250 ok\r\n", Encoding.ASCII.GetString(buffer, 0, n));
    }

    [Fact]
    public void Server_options_allow_tls_1_2_and_1_3_only()
    {
        using var dir = new TempDir();
        var cert = TestCertificate.Create(dir.Path);
        var store = TlsCertificateStore.Load(new TlsSettings(cert.CertificatePath, cert.KeyPath));

        var options = store.CreateServerOptions();

        Assert.Equal(SslProtocols.Tls12 | SslProtocols.Tls13, options.EnabledSslProtocols);
        Assert.False(options.ClientCertificateRequired);
        Assert.False(options.AllowRenegotiation);
        Assert.NotNull(options.ServerCertificateContext);
    }

    [Fact]
    public void Certificate_reloads_when_the_files_change_and_a_bad_pair_keeps_the_old_one()
    {
        using var dir = new TempDir();
        var cert = TestCertificate.Create(dir.Path);
        var store = TlsCertificateStore.Load(new TlsSettings(cert.CertificatePath, cert.KeyPath));
        Assert.Equal(cert.Thumbprint, store.Certificate.Thumbprint);
        Assert.Null(store.Reload(force: false));

        var renewed = cert.Replace("renewed.test");
        Assert.Contains("loaded", store.Reload(force: false));
        Assert.Equal(renewed.Thumbprint, store.Certificate.Thumbprint);

        // A key that does not belong to the certificate: refused, the renewed one stays.
        var other = TestCertificate.Create(dir.Path, "other");
        File.Copy(other.KeyPath, renewed.KeyPath, overwrite: true);
        Assert.Contains("keeping", store.Reload(force: false));
        Assert.Equal(renewed.Thumbprint, store.Certificate.Thumbprint);
        Assert.Null(store.Reload(force: false)); // the same broken files are not reported again
    }

    [Fact]
    public void Missing_or_mismatched_files_are_config_errors()
    {
        using var dir = new TempDir();
        var cert = TestCertificate.Create(dir.Path);
        var other = TestCertificate.Create(dir.Path, "other");

        Assert.Throws<ConfigException>(() => TlsCertificateStore.Load(new TlsSettings(dir.File("missing.crt"), cert.KeyPath)));
        Assert.Throws<ConfigException>(() => TlsCertificateStore.Load(new TlsSettings(cert.CertificatePath, other.KeyPath)));
        File.WriteAllText(dir.File("junk.crt"), "not pem");
        Assert.Throws<ConfigException>(() => TlsCertificateStore.Load(new TlsSettings(dir.File("junk.crt"), cert.KeyPath)));
    }

    [Fact]
    public async Task A_client_that_is_not_speaking_tls_fails_the_handshake()
    {
        using var dir = new TempDir();
        var cert = TestCertificate.Create(dir.Path);
        var store = TlsCertificateStore.Load(new TlsSettings(cert.CertificatePath, cert.KeyPath));
        var (serverPipe, clientPipe) = CrossedPipes();

        var serverTask = TlsTransport.AcceptAsync(serverPipe, store, TimeSpan.FromSeconds(30), CancellationToken.None).AsTask();
        await clientPipe.Output.WriteAsync("MAIL FROM:<evil@example.test>\r\nRCPT TO:<x@example.test>\r\n"u8.ToArray());
        await clientPipe.Output.CompleteAsync();

        await Assert.ThrowsAnyAsync<Exception>(() => serverTask);
    }

    /// <summary>The client side of the pipes as a Stream (the test's own, independent of the code under test).</summary>
    private sealed class DuplexStreamForTest(IDuplexPipe pipe) : Stream
    {
        private readonly Stream _read = pipe.Input.AsStream();
        private readonly Stream _write = pipe.Output.AsStream();

        public override bool CanRead => true;
        public override bool CanWrite => true;
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => _read.ReadAsync(buffer, ct);
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default) => _write.WriteAsync(buffer, ct);
        public override Task FlushAsync(CancellationToken ct) => _write.FlushAsync(ct);
        public override int Read(byte[] buffer, int offset, int count) => _read.Read(buffer, offset, count);
        public override void Write(byte[] buffer, int offset, int count) => _write.Write(buffer, offset, count);
        public override void Flush() => _write.Flush();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
