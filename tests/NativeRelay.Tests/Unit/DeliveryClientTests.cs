using System.Net;
using System.Text;
using NativeRelay.Message;
using NativeRelay.Routing;
using NativeRelay.Smtp;
using NativeRelay.Spool;
using NativeRelay.Tests.Support;
using SmtpReply = NativeRelay.Smtp.SmtpReply;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// The outbound SMTP client (<see cref="SmtpClientSession"/>) against a peer on loopback: HELO
/// fallback, commands without PIPELINING, BDAT, STARTTLS (and what it must refuse), the peer's
/// recipient limit (452, LIMITS RCPTMAX), the DSN parameters, a refused MAIL.
/// </summary>
public sealed class DeliveryClientTests : IAsyncLifetime
{
    private PeerGroup _peers = null!;
    private MxPeer Peer => _peers[0];

    public Task InitializeAsync()
    {
        _peers = PeerGroup.Start("127.0.0.2");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _peers.DisposeAsync();

    private Task<SmtpClientSession> ConnectAsync(TlsPolicy tls = TlsPolicy.None) =>
        SmtpClientSession.ConnectAsync(new IPEndPoint(IPAddress.Parse(Peer.Ip), Peer.Port), new SmtpClientOptions
        {
            HeloName = "relay.test",
            ConnectTimeout = TimeSpan.FromSeconds(10),
            CommandTimeout = TimeSpan.FromSeconds(30),
            Tls = tls,
            TlsHostName = "peer.test",
        }, CancellationToken.None);

    private static Envelope Envelope(params string[] recipients) =>
        DeliveryWorld.Envelope("alice@origin.test", recipients);

    private static MessageBuffer Body(string messageId = "client@test")
    {
        var body = MessageBuffer.Rent();
        body.Write(MessageText.Simple(messageId));
        return body;
    }

    private static async Task<SmtpReply[]> SendAsync(SmtpClientSession session, Envelope envelope)
    {
        var body = Body();
        try
        {
            var results = new SmtpReply[envelope.Recipients.Length];
            await session.SendAsync(envelope, body, Enumerable.Range(0, results.Length).ToArray(), results);
            return results;
        }
        finally
        {
            body.Release();
        }
    }

    [Fact]
    public async Task Helo_is_used_when_ehlo_is_refused()
    {
        Peer.EhloRefused = true;
        await using var session = await ConnectAsync();

        var results = await SendAsync(session, Envelope("a@dest.test"));

        Assert.Equal(SmtpCapabilities.None, session.Capabilities);
        Assert.Equal(250, results[0].Code);
        Assert.Single(Peer.Messages);
    }

    [Fact]
    public async Task Without_pipelining_each_command_waits_for_its_reply()
    {
        Peer.Pipelining = false;
        Peer.RcptReply = to => to.StartsWith("b@", StringComparison.Ordinal) ? "550 5.1.1 no such user" : "250 2.1.5 Ok";
        await using var session = await ConnectAsync();

        var results = await SendAsync(session, Envelope("a@dest.test", "b@dest.test", "c@dest.test"));
        var again = await SendAsync(session, Envelope("d@dest.test"));

        Assert.Equal([250, 550, 250], results.Select(r => r.Code));
        Assert.Equal("5.1.1 no such user", results[1].Text);
        Assert.Equal(250, again[0].Code);
        Assert.Equal(2, Peer.Messages.Count);
        Assert.True(session.IsUsable);
    }

    [Theory]
    // One plain line: kept as it is (the parser's shortcut).
    [InlineData("250 2.0.0 Ok: queued as 4Fq2Xk", 250, "2.0.0 Ok: queued as 4Fq2Xk")]
    // Several lines: joined with a space.
    [InlineData("250-2.0.0 Ok\r\n250 queued as 4Fq2Xk", 250, "2.0.0 Ok queued as 4Fq2Xk")]
    // A control character never reaches a log or a bounce, on one line or several.
    [InlineData("554 5.7.1 bad\tword", 554, "5.7.1 bad word")]
    [InlineData("451-4.3.0 try\r\n451 again\u0007 later", 451, "4.3.0 try again  later")]
    // No text at all.
    [InlineData("250", 250, "")]
    public async Task The_final_reply_keeps_its_text_as_one_printable_line(string reply, int code, string text)
    {
        Peer.DataReply = _ => reply;
        await using var session = await ConnectAsync();

        var results = await SendAsync(session, Envelope("a@dest.test"));

        Assert.Equal(code, results[0].Code);
        Assert.Equal(text, results[0].Text);
    }

    [Fact]
    public async Task Bdat_sends_the_bytes_as_they_are_with_or_without_pipelining()
    {
        Peer.Chunking = true;
        Peer.Pipelining = false;
        await using var session = await ConnectAsync();
        var data = MessageText.Build("Subject: x", "Message-ID: <bdat-raw@test>", "", ".leading dot", "..two", "last");
        var body = MessageBuffer.Rent();
        body.Write(data);

        var results = new SmtpReply[1];
        await session.SendAsync(Envelope("a@dest.test"), body, [0], results);
        body.Release();

        Assert.Equal(250, results[0].Code);
        var got = Assert.Single(Peer.Messages);
        Assert.True(got.Bdat);
        Assert.Equal(data, got.Data);
    }

    [Fact]
    public async Task Bdat_is_not_sent_when_every_recipient_was_refused()
    {
        Peer.Chunking = true;
        Peer.RcptReply = _ => "550 5.1.1 no such user";
        await using var session = await ConnectAsync();

        var results = await SendAsync(session, Envelope("a@dest.test", "b@dest.test"));

        Assert.All(results, r => Assert.Equal(550, r.Code));
        Assert.Equal(0, Peer.DataAttemptCount);
        Assert.True(session.IsUsable);
    }

    [Fact]
    public async Task Starttls_is_started_when_offered_and_ehlo_is_said_again()
    {
        Peer.StartTls = true;
        await using var session = await ConnectAsync(TlsPolicy.Opportunistic);

        var results = await SendAsync(session, Envelope("a@dest.test"));

        Assert.StartsWith("TLSv1.", session.TlsProtocol);
        Assert.False(session.TlsCertificateVerified); // self-signed
        Assert.Equal(2, Peer.EhloCount);
        Assert.Equal(250, results[0].Code);
        Assert.True(Assert.Single(Peer.Messages).Tls);
    }

    [Fact]
    public async Task Required_tls_fails_the_session_when_starttls_is_not_offered()
    {
        var e = await Assert.ThrowsAsync<SmtpSessionException>(() => ConnectAsync(TlsPolicy.Required));

        Assert.Equal(SmtpFailureStage.Tls, e.Stage);
        Assert.True(e.Reply.IsTransient);
        Assert.StartsWith("4.7.4", e.Reply.Text);
    }

    [Fact]
    public async Task Data_injected_after_the_starttls_reply_is_refused()
    {
        Peer.StartTls = true;
        Peer.InjectAfterStartTls = true;

        var e = await Assert.ThrowsAsync<SmtpSessionException>(() => ConnectAsync(TlsPolicy.Opportunistic));

        Assert.Equal(SmtpFailureStage.Tls, e.Stage);
        Assert.Contains("sent data after its STARTTLS reply", e.Reply.Text);
    }

    [Fact]
    public async Task A_failed_handshake_is_a_tls_failure()
    {
        Peer.StartTls = true;
        Peer.BreakTlsHandshake = true;

        var e = await Assert.ThrowsAsync<SmtpSessionException>(() => ConnectAsync(TlsPolicy.Opportunistic));

        Assert.Equal(SmtpFailureStage.Tls, e.Stage);
        Assert.StartsWith("4.7.5", e.Reply.Text);
    }

    [Fact]
    public async Task A_4xx_greeting_is_a_greeting_failure()
    {
        Peer.Greeting = "421 4.3.2 busy";

        var e = await Assert.ThrowsAsync<SmtpSessionException>(() => ConnectAsync());

        Assert.Equal(SmtpFailureStage.Greeting, e.Stage);
        Assert.Equal(421, e.Reply.Code);
    }

    [Fact]
    public async Task Recipients_past_a_452_come_back_unsent_and_the_limit_is_learned()
    {
        Peer.MaxRecipientsPerTransaction = 2;
        await using var session = await ConnectAsync();

        var results = await SendAsync(session, Envelope("a@dest.test", "b@dest.test", "c@dest.test"));

        Assert.Equal([250, 250, 0], results.Select(r => r.Code));
        Assert.Equal(2, session.RecipientLimit);
        Assert.True(session.IsUsable);
    }

    [Fact]
    public async Task A_452_for_the_first_recipient_is_a_transient_failure()
    {
        Peer.RcptReply = _ => "452 4.2.2 mailbox full";
        await using var session = await ConnectAsync();

        var results = await SendAsync(session, Envelope("a@dest.test", "b@dest.test"));

        Assert.All(results, r => Assert.Equal(452, r.Code));
        Assert.Equal(0, session.RecipientLimit);
    }

    [Fact]
    public async Task Limits_rcptmax_is_honoured_without_a_452()
    {
        Peer.Limits = "RCPTMAX=2 MAILMAX=10";
        Peer.MaxRecipientsPerTransaction = 2;
        await using var session = await ConnectAsync();

        var results = await SendAsync(session, Envelope("a@dest.test", "b@dest.test", "c@dest.test"));

        Assert.Equal([250, 250, 0], results.Select(r => r.Code));
        Assert.Equal(0, Peer.RcptAttempts("c@dest.test"));
        Assert.Equal(10, session.TransactionLimit);
    }

    [Fact]
    public async Task A_refused_mail_from_applies_to_every_recipient()
    {
        Peer.MailReply = _ => "553 5.7.1 sender rejected";
        await using var session = await ConnectAsync();

        var results = await SendAsync(session, Envelope("a@dest.test", "b@dest.test"));

        Assert.All(results, r => Assert.Equal("553 5.7.1 sender rejected", r.ToString()));
        Assert.True(session.IsUsable);
        Assert.Equal(0, Peer.DataAttemptCount);
    }

    [Fact]
    public async Task Dsn_parameters_go_only_to_a_peer_that_offers_dsn()
    {
        var envelope = DeliveryWorld.Envelope("alice@origin.test", ["a@dest.test"], EnvelopeFlags.ReturnFull,
            notify: [DsnNotify.Failure], orcpt: ["rfc822;a@dest.test"], envId: "E1");
        await using (var plain = await ConnectAsync())
            await SendEnvelopeAsync(plain, envelope);
        Peer.Dsn = true;
        await using (var dsn = await ConnectAsync())
            await SendEnvelopeAsync(dsn, envelope);

        var messages = Peer.Messages;
        Assert.Equal("SIZE=" + MessageText.Simple("client@test").Length, messages[0].MailParameters);
        Assert.Equal("", messages[0].RecipientParameters[0]);
        Assert.Contains("RET=FULL ENVID=E1", messages[1].MailParameters);
        Assert.Equal("NOTIFY=FAILURE ORCPT=rfc822;a@dest.test", messages[1].RecipientParameters[0]);
    }

    private static async Task SendEnvelopeAsync(SmtpClientSession session, Envelope envelope)
    {
        var body = Body();
        var results = new SmtpReply[1];
        await session.SendAsync(envelope, body, [0], results);
        body.Release();
        Assert.Equal(250, results[0].Code);
    }

    [Fact]
    public async Task The_plain_send_form_reports_every_recipient()
    {
        await using var session = await ConnectAsync();
        var body = Body();

        var replies = await session.SendAsync(Encoding.ASCII.GetBytes("alice@origin.test"), ["a@dest.test"u8.ToArray()], body, eightBit: true);
        body.Release();

        Assert.Equal(250, Assert.Single(replies).Code);
        Assert.Contains("BODY=8BITMIME", Assert.Single(Peer.Messages).MailParameters);
    }
}
