using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using NativeRelay.Tools;

namespace NativeRelay.Tests.Unit;

/// <summary>blast --tls: STARTTLS, a second EHLO, then mail over TLS. Against a minimal test server on loopback.</summary>
public sealed class ToolsTlsTests
{
    [Fact]
    public async Task Blast_sends_over_starttls()
    {
        using var cert = SelfSigned();
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var server = new StartTlsServer(listener, cert, stop.Token);
        var serving = server.RunAsync();
        try
        {
            var result = await new Blaster(new BlastOptions
            {
                Port = ((IPEndPoint)listener.LocalEndpoint).Port,
                Host = "127.0.0.1",
                Messages = 30,
                Sessions = 2,
                Tls = true,
                Quiet = true,
                Timeout = TimeSpan.FromSeconds(30),
            }).RunAsync();

            var w = new StringWriter();
            result.WriteText(w);
            Assert.True(result.Success, w.ToString());
            Assert.Equal(2, result.Connections);
            Assert.True(result.Pipelining);
            Assert.Equal(30, server.Messages);
            Assert.Equal(2, server.TlsSessions);
        }
        finally
        {
            listener.Stop();
            stop.Cancel();
            await serving;
        }
    }

    [Fact]
    public async Task Blast_with_tls_against_a_server_without_starttls_fails_each_message_as_tls()
    {
        var sink = new SmtpSink(new SinkOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0), Quiet = true });
        sink.Start();
        await using (sink)
        {
            var result = await new Blaster(new BlastOptions
            {
                Port = sink.EndPoint.Port,
                Messages = 6,
                Sessions = 2,
                Tls = true,
                Quiet = true,
                Timeout = TimeSpan.FromSeconds(30),
            }).RunAsync();
            Assert.Equal(6, result.Failed);
            Assert.Equal(6, result.Errors.Count(LocalFailure.Tls));
            Assert.Contains(result.Errors.Entries(), e => e.Key == "tls" && e.Text!.Contains("STARTTLS"));
        }
    }

    private static X509Certificate2 SelfSigned()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>Just enough SMTP: answers each line in order, so pipelined commands work too.</summary>
    private sealed class StartTlsServer(TcpListener listener, X509Certificate2 cert, CancellationToken stop)
    {
        private int _messages;
        private int _tls;

        public int Messages => Volatile.Read(ref _messages);
        public int TlsSessions => Volatile.Read(ref _tls);

        public async Task RunAsync()
        {
            var sessions = new List<Task>();
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    var client = await listener.AcceptTcpClientAsync(stop);
                    sessions.Add(Task.Run(() => SessionAsync(client)));
                }
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
            }
            await Task.WhenAll(sessions);
        }

        private async Task SessionAsync(TcpClient client)
        {
            using var _ = client;
            try
            {
                Stream stream = client.GetStream();
                var reader = new StreamReader(stream, Encoding.ASCII);
                await Write(stream, "220 tls.test ESMTP\r\n");
                while (await reader.ReadLineAsync(stop) is { } line)
                {
                    var verb = line.Split(' ')[0].ToUpperInvariant();
                    if (verb == "EHLO")
                        await Write(stream, stream is SslStream ? "250-tls.test\r\n250-PIPELINING\r\n250 SIZE\r\n" : "250-tls.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
                    else if (verb == "STARTTLS")
                    {
                        await Write(stream, "220 2.0.0 go ahead\r\n");
                        var tls = new SslStream(stream);
                        await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = cert }, stop);
                        Interlocked.Increment(ref _tls);
                        stream = tls;
                        reader = new StreamReader(stream, Encoding.ASCII);
                    }
                    else if (verb == "DATA")
                    {
                        if (stream is not SslStream)
                            throw new InvalidOperationException("mail before STARTTLS");
                        await Write(stream, "354 go\r\n");
                        while (await reader.ReadLineAsync(stop) is { } data && data != ".")
                        {
                        }
                        Interlocked.Increment(ref _messages);
                        await Write(stream, "250 2.0.0 queued\r\n");
                    }
                    else if (verb == "QUIT")
                    {
                        await Write(stream, "221 bye\r\n");
                        break;
                    }
                    else
                        await Write(stream, "250 2.0.0 ok\r\n");
                }
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
            {
            }
        }

        private async Task Write(Stream stream, string text)
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes(text), stop);
            await stream.FlushAsync(stop);
        }
    }
}
