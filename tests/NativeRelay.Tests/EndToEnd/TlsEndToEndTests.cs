using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>STARTTLS (RFC 3207), implicit TLS (RFC 8314), certificate reload, and the Received header under TLS (RFC 3848).</summary>
[Trait("Category", "EndToEnd")]
public sealed class TlsEndToEndTests(ITestOutputHelper log)
{
    private const string Sender = "sender@example.test";
    private const string Rcpt = "rcpt@example.test";

    [Fact]
    public async Task Starttls_handshake_resets_the_session_and_the_received_header_says_esmtps()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true });
        await using var client = await SecureSmtpClient.ConnectEhloAsync(h.Port);

        await client.StartTlsAsync();
        Assert.Equal(h.Certificate!.Thumbprint, client.ServerCertificate!.Thumbprint);
        Assert.True(client.Tls!.SslProtocol >= System.Security.Authentication.SslProtocols.Tls12);
        var mailBeforeEhlo = await client.CommandAsync($"MAIL FROM:<{Sender}>");
        Assert.Equal(503, mailBeforeEhlo.Code);
        var ehlo = await client.ExpectAsync("EHLO client.test", 250);
        Assert.DoesNotContain(ehlo.Lines, l => l.StartsWith("STARTTLS", StringComparison.OrdinalIgnoreCase));
        Assert.Equal(503, (await client.CommandAsync("STARTTLS")).Code);
        var queued = await client.SendMessageAsync(Sender, [Rcpt], MessageText.Simple("over-tls@client.test"));
        Assert.Equal(250, queued.Code);

        var delivered = await h.WaitForMessageIdAsync("over-tls@client.test");
        string received = MessageText.Unfold(MessageText.Header(delivered.DataText, "Received")!);
        Assert.Matches(@"with ESMTPS id [0-9A-F]+\s+\(using TLSv1\.[23] with cipher TLS_\w+\)", received);
    }

    [Fact]
    public async Task Commands_pipelined_after_starttls_are_discarded_not_run_under_tls()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true });
        await using var client = await SecureSmtpClient.ConnectEhloAsync(h.Port);

        // The injection: plain-text commands in the same packet as STARTTLS.
        await client.SendRawAsync("STARTTLS\r\nMAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\n");
        var ready = await client.ReadReplyAsync();
        Assert.Equal(220, ready.Code);
        await client.HandshakeAsync(); // fails the test if any reply to the injected commands came in plain text
        await client.ExpectAsync("EHLO client.test", 250);
        var rcpt = await client.CommandAsync($"RCPT TO:<{Rcpt}>");
        var data = await client.CommandAsync("DATA");

        Assert.Equal(503, rcpt.Code); // no MAIL was ever accepted in this session
        Assert.Equal(503, data.Code);
        await h.Relay.WaitForOutputAsync("pipelined after STARTTLS", TimeSpan.FromSeconds(30));
        var all = await h.DeliveredBeforeMarkerAsync("marker-starttls-injection@client.test");
        Assert.Single(all);
        Assert.Equal(0, h.Sink.RcptAttempts("victim@example.test"));
    }

    [Fact]
    public async Task A_failed_handshake_costs_only_that_connection()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true });
        await using (var client = await SecureSmtpClient.ConnectEhloAsync(h.Port))
        {
            await client.ExpectAsync("STARTTLS", 220);
            await client.SendRawAsync("this is not a TLS client hello\r\n\r\n");
            try
            {
                await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(60));
            }
            catch (InvalidDataException)
            {
                // a TLS alert is not an SMTP reply; the close follows
            }
        }

        await using var next = await SecureSmtpClient.ConnectEhloAsync(h.Port);
        await next.StartTlsAsync();
        await next.ExpectAsync("EHLO client.test", 250);
    }

    [Fact]
    public async Task Implicit_tls_listener_handshakes_before_the_greeting()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { ImplicitTls = true });
        await using var client = await SecureSmtpClient.ConnectAsync(h.ImplicitTlsPort, implicitTls: true);

        await client.ExpectGreetingAsync();
        var ehlo = await client.ExpectAsync("EHLO client.test", 250);

        Assert.Equal(h.Certificate!.Thumbprint, client.ServerCertificate!.Thumbprint);
        Assert.DoesNotContain(ehlo.Lines, l => l.StartsWith("STARTTLS", StringComparison.OrdinalIgnoreCase));
        Assert.Contains("AUTH PLAIN LOGIN", ehlo.Lines);
    }

    [Fact]
    public async Task Plain_text_client_on_the_implicit_tls_port_gets_no_greeting()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { ImplicitTls = true });
        await using var client = await SecureSmtpClient.ConnectAsync(h.ImplicitTlsPort);
        client.ReplyTimeout = TimeSpan.FromSeconds(2);

        await client.SendRawAsync("EHLO client.test\r\n");
        SmtpReply? reply = null;
        try
        {
            reply = await client.TryReadReplyAsync();
        }
        catch (TimeoutException)
        {
        }
        catch (InvalidDataException)
        {
            // TLS alert bytes are not an SMTP reply either.
        }

        Assert.True(reply is null || reply.Code != 220, $"a plain-text greeting came from the implicit-TLS port: {reply}");
    }

    [Fact]
    public async Task Certificate_is_reloaded_on_sighup()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true, Configure = c => c["reloadCheckSeconds"] = 3600 });
        var renewed = h.Certificate!.Replace("renewed.test");

        h.Relay.Signal(1); // SIGHUP

        await WaitForCertificateAsync(h, renewed.Thumbprint);
        Assert.False(h.Relay.HasExited, "SIGHUP must reload, not stop the relay");
        await h.Relay.WaitForOutputAsync("TLS certificate loaded: CN=renewed.test", TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task Certificate_is_reloaded_when_the_files_change()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true, Configure = c => c["reloadCheckSeconds"] = 1 });
        var renewed = h.Certificate!.Replace("changed.test");

        await WaitForCertificateAsync(h, renewed.Thumbprint);
    }

    [Fact]
    public async Task Relay_does_not_start_with_a_key_that_does_not_match_the_certificate()
    {
        using var dir = new TempDir();
        var cert = TestCertificate.Create(dir.Path);
        var other = TestCertificate.Create(dir.Path, "other");
        int port = FreePort.Get();

        var result = await RelayProcess.RunToExitAsync(
            ["serve", "--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--tls-cert", cert.CertificatePath, "--tls-key", other.KeyPath],
            dir.Path, log);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains(result.StderrLines, l => l.Contains("certificate", StringComparison.OrdinalIgnoreCase));
    }

    private static async Task WaitForCertificateAsync(ReceivingHarness h, string thumbprint)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        string? seen = null;
        while (DateTime.UtcNow < deadline)
        {
            await using (var client = await SecureSmtpClient.ConnectEhloAsync(h.Port))
            {
                await client.StartTlsAsync();
                seen = client.ServerCertificate!.Thumbprint;
            }

            if (seen == thumbprint)
            {
                return;
            }

            await Task.Delay(200);
        }

        Assert.Fail($"The relay still presents {seen}, not the new certificate {thumbprint}.\n{h.Relay.Describe()}");
    }

    // The timeouts under TLS: the session's pipes are then stream pipes over the SslStream, and a
    // passed deadline must still end the read (idle client) or the write (client not reading).

    [Fact]
    public async Task An_idle_client_under_tls_gets_421_at_the_command_timeout()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new()
        {
            Tls = true,
            Configure = c => ReceivingHarness.Limits(c)["commandTimeoutSeconds"] = 1,
        });
        await using var client = await SecureSmtpClient.ConnectEhloAsync(h.Port);
        await client.StartTlsAsync();
        await client.ExpectAsync("EHLO client.test", 250);

        var replies = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(60));

        var bye = Assert.Single(replies); // encrypted, like everything after the handshake
        Assert.Equal(421, bye.Code);
        Assert.Equal("4.4.2", bye.EnhancedCode);
    }

    [Fact]
    public async Task A_client_under_tls_that_never_reads_its_replies_is_dropped_and_its_slot_freed()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new()
        {
            Tls = true,
            Configure = c =>
            {
                var limits = ReceivingHarness.Limits(c);
                limits["commandTimeoutSeconds"] = 1;
                limits["maxConnectionsPerIp"] = 1;
                limits["maxCommands"] = 10_000_000;
            },
        });
        await using var hog = await SecureSmtpClient.ConnectEhloAsync(h.Port);
        await hog.StartTlsAsync();
        // From now on the hog writes NOOPs under TLS and never reads a reply.
        var flood = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("NOOP\r\n", 700_000)));
        using var stopFlood = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var flooding = Task.Run(async () =>
        {
            try
            {
                await hog.Tls!.WriteAsync(flood, stopFlood.Token);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
            {
            }
        });

        await h.Relay.WaitForOutputAsync("does not read its replies", TimeSpan.FromSeconds(60));
        // The only slot is free again: a new client is greeted and can start TLS. The slot comes
        // back when the relay has closed the hog's socket, a moment after the log line: a 421
        // before that is retried (bounded), never accepted as the end.
        SecureSmtpClient? greeted = null;
        for (int attempt = 0; greeted is null; attempt++)
        {
            try
            {
                greeted = await SecureSmtpClient.ConnectEhloAsync(h.Port);
            }
            catch (Xunit.Sdk.XunitException e) when (attempt < 100 && e.Message.Contains("421 4.7.0", StringComparison.Ordinal))
            {
                await Task.Delay(100);
            }
        }
        await using var next = greeted;
        await next.StartTlsAsync();
        await next.ExpectAsync("EHLO client.test", 250);
        stopFlood.Cancel();
        await flooding;
    }
}
