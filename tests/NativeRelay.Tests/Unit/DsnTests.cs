using System.Text;
using NativeRelay.Message;
using SmtpReply = NativeRelay.Smtp.SmtpReply;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>The DSN builder (RFC 3464, RFC 6522, RFC 6533): structure, fields, and what comes back.</summary>
public sealed class DsnTests
{
    private static readonly byte[] Original = MessageText.Build(
        "Received: from client.test by relay.test; Mon, 1 Jan 2024 00:00:00 +0000",
        "From: alice@origin.test",
        "Subject: the original",
        "Message-ID: <orig@test>",
        "",
        "line one",
        "--not-a-boundary",
        "last line");

    private static MessageBuffer Buffer(byte[] data)
    {
        var b = MessageBuffer.Rent();
        b.Write(data);
        return b;
    }

    private static DsnRecipient Failed(string address, string diagnostic = "550 5.1.1 <x>: no such user", string? remote = "mx.dest.test") => new()
    {
        FinalRecipient = Encoding.UTF8.GetBytes(address),
        Action = DsnAction.Failed,
        Status = DsnRecipient.StatusOf(new SmtpReply(int.Parse(diagnostic[..3]), diagnostic[4..])),
        RemoteMta = remote,
        Diagnostic = diagnostic,
        DiagnosticFromRemote = remote is not null,
        LastAttempt = DateTimeOffset.UnixEpoch,
    };

    private static DsnMessage Build(DsnReport report, byte[]? original = null)
    {
        var body = Buffer(original ?? Original);
        var dsn = DsnBuilder.Build(report, body, out _);
        try
        {
            var bytes = new byte[dsn.ContentLength];
            dsn.CopyTo(0, bytes);
            foreach (var line in Encoding.UTF8.GetString(bytes).Split("\r\n"))
                Assert.True(Encoding.UTF8.GetByteCount(line) <= 998, $"a line longer than 998 octets: {line}");
            Assert.DoesNotContain("\n", Encoding.UTF8.GetString(bytes).Replace("\r\n", ""));
            return DsnMessage.Parse(bytes);
        }
        finally
        {
            dsn.Release();
            body.Release();
        }
    }

    private static DsnReport Report(IReadOnlyList<DsnRecipient> recipients, bool full = true, byte[]? envId = null, bool international = false) => new()
    {
        ReportingMta = "relay.test",
        ReturnPath = Encoding.UTF8.GetBytes("alice@origin.test"),
        OriginalQueueId = 0x0123456789ABCDEF,
        DsnQueueId = 0x0123456789ABCDF0,
        ArrivalDate = new DateTimeOffset(2024, 1, 1, 0, 0, 0, TimeSpan.Zero),
        Date = new DateTimeOffset(2024, 1, 2, 0, 0, 0, TimeSpan.Zero),
        EnvelopeId = envId,
        Recipients = recipients,
        ReturnFullMessage = full,
        International = international,
    };

    [Fact]
    public void A_dsn_is_a_multipart_report_with_three_parts()
    {
        var dsn = Build(Report([Failed("bob@dest.test")]));

        Assert.Equal("Mail Delivery System <MAILER-DAEMON@relay.test>", dsn.Header("From"));
        Assert.Equal("<alice@origin.test>", dsn.Header("To"));
        Assert.Equal("Undelivered Mail Returned to Sender", dsn.Header("Subject"));
        Assert.Equal("1.0", dsn.Header("MIME-Version"));
        Assert.Equal("<0123456789ABCDF0.dsn@relay.test>", dsn.Header("Message-ID"));
        Assert.Equal("Tue, 2 Jan 2024 00:00:00 +0000", dsn.Header("Date"));
        Assert.Equal(3, dsn.Parts.Count);
        Assert.Equal("text/plain; charset=utf-8", dsn.Parts[0].ContentType);
        Assert.Equal("message/delivery-status", dsn.Parts[1].ContentType);
        Assert.Equal("message/rfc822", dsn.Parts[2].ContentType);
        Assert.Equal("dns; relay.test", dsn.PerMessage["reporting-mta"]);
        Assert.Equal("Mon, 1 Jan 2024 00:00:00 +0000", dsn.PerMessage["arrival-date"]);
        Assert.False(dsn.PerMessage.ContainsKey("original-envelope-id"));
        var r = dsn.Recipient("bob@dest.test");
        Assert.Equal("rfc822; bob@dest.test", r["final-recipient"]);
        Assert.Equal("failed", r["action"]);
        Assert.Equal("5.1.1", r["status"]);
        Assert.Equal("dns; mx.dest.test", r["remote-mta"]);
        Assert.Equal("smtp; 550 5.1.1 <x>: no such user", r["diagnostic-code"]);
        Assert.Equal("Thu, 1 Jan 1970 00:00:00 +0000", r["last-attempt-date"]);
        // The whole original, including a line that looks like a boundary but is not this one.
        Assert.Equal(Encoding.ASCII.GetString(Original), dsn.Parts[2].Body.Replace("\r\n--" , "\r\n--", StringComparison.Ordinal)[..Original.Length]);
    }

    [Fact]
    public void Headers_only_returns_the_header_section_as_text_rfc822_headers()
    {
        var dsn = Build(Report([Failed("bob@dest.test")], full: false));

        Assert.Equal("text/rfc822-headers", dsn.Parts[2].ContentType);
        Assert.Contains("Subject: the original", dsn.Parts[2].Body);
        Assert.DoesNotContain("line one", dsn.Text);
        Assert.Contains("headers of the message are attached", dsn.Parts[0].Body);
    }

    [Fact]
    public void Envid_orcpt_and_local_diagnostics_are_reported()
    {
        var recipient = new DsnRecipient
        {
            FinalRecipient = "bob@dest.test"u8.ToArray(),
            OriginalRecipient = "rfc822;Bob@Dest.Test"u8.ToArray(),
            Action = DsnAction.Failed,
            Status = "5.1.10",
            Diagnostic = "556 5.1.10 the domain dest.test does not accept mail (null MX, RFC 7505)",
        };

        var dsn = Build(Report([recipient], envId: "QQ314159"u8.ToArray()));

        Assert.Equal("QQ314159", dsn.PerMessage["original-envelope-id"]);
        var r = dsn.Recipient("bob@dest.test");
        Assert.Equal("rfc822;Bob@Dest.Test", r["original-recipient"]);
        Assert.Equal("X-NativeRelay; 556 5.1.10 the domain dest.test does not accept mail (null MX, RFC 7505)", r["diagnostic-code"]);
        Assert.False(r.ContainsKey("remote-mta"));
    }

    [Fact]
    public void Delayed_and_relayed_recipients_have_their_own_actions_and_subject()
    {
        var delayed = new DsnRecipient
        {
            FinalRecipient = "late@dest.test"u8.ToArray(), Action = DsnAction.Delayed, Status = "4.4.1",
            Diagnostic = "421 4.4.1 connect to 192.0.2.1:25 timed out", WillRetryUntil = new DateTimeOffset(2024, 1, 6, 0, 0, 0, TimeSpan.Zero),
        };

        var dsn = Build(Report([delayed]));

        Assert.StartsWith("Delayed Mail", dsn.Header("Subject"));
        var r = dsn.Recipient("late@dest.test");
        Assert.Equal("delayed", r["action"]);
        Assert.Equal("Sat, 6 Jan 2024 00:00:00 +0000", r["will-retry-until"]);
    }

    [Fact]
    public void Long_diagnostics_are_folded_and_kept_whole()
    {
        string text = "550 5.7.1 " + string.Join(' ', Enumerable.Range(0, 120).Select(i => $"word{i}")) + " " + new string('z', 1500);

        var dsn = Build(Report([Failed("bob@dest.test", text)]));

        Assert.Equal("smtp; " + text.Replace(new string('z', 1500), ""), dsn.Recipient("bob@dest.test")["diagnostic-code"][..(text.Length - 1500 + 6)]);
        Assert.Contains(new string('z', 800), dsn.Recipient("bob@dest.test")["diagnostic-code"]);
    }

    [Fact]
    public void An_international_message_gets_the_rfc_6533_types()
    {
        var recipient = new DsnRecipient { FinalRecipient = Encoding.UTF8.GetBytes("jörg@dest.test"), Action = DsnAction.Failed, Status = "5.6.7" };

        var dsn = Build(Report([recipient], international: true));

        Assert.Equal("message/global-delivery-status", dsn.Parts[1].ContentType);
        Assert.Equal("message/global", dsn.Parts[2].ContentType);
        Assert.Equal("utf-8; jörg@dest.test", dsn.Recipient("jörg@dest.test")["final-recipient"]);
        Assert.Equal("8bit", dsn.Header("Content-Transfer-Encoding"));
    }

    [Fact]
    public void A_message_with_8bit_bytes_comes_back_declared_8bit()
    {
        var original = Encoding.UTF8.GetBytes("Subject: café\r\n\r\nnaïve\r\n");
        var body = Buffer(original);
        var dsn = DsnBuilder.Build(Report([Failed("bob@dest.test")]), body, out bool eightBit);
        dsn.Release();
        body.Release();

        Assert.True(eightBit);
    }

    [Theory]
    [InlineData(550, "5.1.1 user unknown", "5.1.1")]
    [InlineData(550, "user unknown", "5.0.0")]
    [InlineData(550, "4.2.2 mailbox full", "5.0.0")] // the class must match the reply
    [InlineData(451, "4.4.3 SERVFAIL", "4.4.3")]
    [InlineData(556, "5.1.10 null MX", "5.1.10")]
    [InlineData(250, "2.0.0 Ok: queued", "2.0.0")]
    [InlineData(421, "4.4.1", "4.4.1")]
    [InlineData(554, "5.123.4567 odd", "5.123.4567")]
    [InlineData(554, "5.1. broken", "5.0.0")]
    [InlineData(452, null, "4.0.0")]
    public void The_status_comes_from_the_reply(int code, string? text, string status) =>
        Assert.Equal(status, DsnRecipient.StatusOf(new SmtpReply(code, text)));

    [Fact]
    public void The_header_section_ends_at_the_first_empty_line()
    {
        var body = Buffer(Original);
        long end = DsnBuilder.FindHeaderEnd(body);
        body.Release();

        Assert.Equal(Encoding.ASCII.GetString(Original).IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4, end);
    }
}
