using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// Permanent failures, retries and delivery status notifications (RFC 3464) with the published
/// binary. The sender's domain has its own MX (a peer on 127.0.0.4), where bounces arrive.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class BounceTests(ITestOutputHelper log)
{
    private const string Sender = "alice@origin.test";

    /// <summary>DNS for the sender's domain (origin.test → 127.0.0.4) and one recipient domain → 127.0.0.2.</summary>
    private static TestDnsServer Dns(string domain = "dest.test")
    {
        var dns = new TestDnsServer();
        dns.Mx("origin.test", (10, "mx.origin.test")).A("mx.origin.test", "127.0.0.4")
           .Mx(domain, (10, "mx." + domain)).A("mx." + domain, "127.0.0.2");
        return dns;
    }

    private static async Task<DsnMessage> WaitForDsnAsync(MxPeer senderMx, string about)
    {
        var bounce = await senderMx.WaitForMessageAsync(m => m.MailFrom == "" && m.DataText.Contains(about, StringComparison.Ordinal),
            $"a bounce about {about}");
        return DsnMessage.Parse(bounce.Data);
    }

    [Fact]
    public async Task A_null_mx_fails_at_once_with_556_and_is_not_retried()
    {
        await using var dns = Dns();
        dns.NullMx("nomail.test");
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@nomail.test"], MessageText.Simple("nullmx@test", "null mx"));

        var dsn = await WaitForDsnAsync(peers[1], "nullmx@test");
        var r = dsn.Recipient("rcpt@nomail.test");
        Assert.Equal("failed", r["action"]);
        Assert.Equal("5.1.10", r["status"]);
        Assert.Contains("556 5.1.10", r["diagnostic-code"]);
        var failed = await relay.WaitForEventAsync(id, "failed", "rcpt@nomail.test");
        Assert.Equal(1, (int?)failed["attempt"]);
        Assert.Contains("556 5.1.10", (string?)failed["reply"]);
        // No retry: past two retry intervals there is still exactly one attempt and nothing deferred.
        await peers[1].AssertStaysTrueAsync(() => relay.Events(id, "failed").Count == 1 && relay.Events(id, "deferred").Count == 0,
            TimeSpan.FromSeconds(3), "a single attempt");
        Assert.Single(peers[1].Messages);
    }

    [Fact]
    public async Task An_nxdomain_recipient_domain_bounces()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@does-not-exist.test"], MessageText.Simple("nx@test", "nxdomain"));

        var dsn = await WaitForDsnAsync(peers[1], "nx@test");
        var r = dsn.Recipient("rcpt@does-not-exist.test");
        Assert.Equal("failed", r["action"]);
        Assert.Equal("5.1.2", r["status"]);
        Assert.Contains("NXDOMAIN", r["diagnostic-code"]);
        Assert.Empty(relay.Events(id, "deferred"));
    }

    [Fact]
    public async Task A_servfail_is_retried_until_dns_answers()
    {
        await using var dns = Dns("flaky.test");
        dns.ServFail("flaky.test");
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@flaky.test"], MessageText.Simple("servfail@test", "servfail"));

        var deferred = await relay.WaitForEventAsync(id, "deferred", "rcpt@flaky.test");
        Assert.Contains("SERVFAIL", (string?)deferred["reply"]);
        Assert.StartsWith("451 4.4.3", (string?)deferred["reply"]);
        dns.ServFail("flaky.test", false);

        await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<servfail@test>", "the message after DNS recovered");
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.True((int?)delivered["attempt"] >= 2, delivered.ToJsonString());
        Assert.Empty(peers[1].Messages); // no bounce, no delay notice
    }

    [Fact]
    public async Task A_4xx_reply_is_retried_and_then_delivered()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        int attempts = 0;
        peers[0].DataReply = _ => Interlocked.Increment(ref attempts) == 1 ? "451 4.3.0 Try again later" : "250 2.0.0 Ok: queued as X";
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@dest.test"], MessageText.Simple("retry@test", "retry"));

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<retry@test>", "the retried message");
        Assert.Equal(2, peers[0].DataAttemptCount);
        var deferred = Assert.Single(relay.Events(id, "deferred"));
        Assert.Equal(1, (int?)deferred["attempt"]);
        Assert.Equal("451 4.3.0 Try again later", (string?)deferred["reply"]);
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal(2, (int?)delivered["attempt"]);
        Assert.Contains("250 2.0.0 Ok: queued as X", (string?)delivered["reply"]);
        Assert.Single(peers[0].Messages);
        Assert.Empty(peers[1].Messages);
    }

    [Fact]
    public async Task A_5xx_for_one_of_three_recipients_bounces_that_one_alone()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        peers[0].RcptReply = to => to.StartsWith("bob@", StringComparison.Ordinal) ? $"550 5.1.1 <{to}>: Recipient address rejected: User unknown" : "250 2.1.5 Ok";
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["ann@dest.test", "bob@dest.test", "cat@dest.test"],
            MessageText.Simple("three@test", "three recipients"));

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<three@test>", "the message");
        Assert.Equal(["ann@dest.test", "cat@dest.test"], got.Recipients);
        var dsn = await WaitForDsnAsync(peers[1], "three@test");
        var bob = Assert.Single(dsn.PerRecipient);
        Assert.EndsWith("bob@dest.test", bob["final-recipient"]);
        Assert.Equal("failed", bob["action"]);
        Assert.Equal("5.1.1", bob["status"]);
        // Bob is not tried again, and the others are not delivered twice.
        await peers[0].AssertStaysTrueAsync(() => peers[0].RcptAttempts("bob@dest.test") == 1 && peers[0].Messages.Count == 1,
            TimeSpan.FromSeconds(3), "no retry of bob and no second delivery");
        Assert.Single(peers[1].Messages);
        Assert.Single(relay.Events(id, "failed"));
        Assert.Equal(2, relay.Events(id, "delivered").Count);
    }

    [Fact]
    public async Task The_dsn_is_a_multipart_report_with_the_rfc_3464_fields()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        peers[0].RcptReply = to => $"550 5.1.1 <{to}>: no such user here";
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);
        var original = MessageText.Build(
            "From: Alice <alice@origin.test>",
            "To: Gone <gone@dest.test>",
            "Subject: the original subject",
            "Message-ID: <dsn-fields@test>",
            "Date: Mon, 1 Jan 2024 00:00:00 +0000",
            "",
            "The body of the original message.");

        string id = await relay.SendAsync(Sender, ["gone@dest.test"], original);

        var bounce = await peers[1].WaitForMessageAsync(m => m.MailFrom == "", "the bounce");
        Assert.Equal(["alice@origin.test"], bounce.Recipients);            // to the envelope sender
        var dsn = DsnMessage.Parse(bounce.Data);
        Assert.Contains("MAILER-DAEMON@relay.test", dsn.Header("From"));
        Assert.Contains("alice@origin.test", dsn.Header("To"));
        Assert.Equal("auto-replied", dsn.Header("Auto-Submitted"));
        Assert.Contains("report-type=delivery-status", dsn.Header("Content-Type"));
        Assert.Equal(3, dsn.Parts.Count);
        Assert.StartsWith("text/plain", dsn.Parts[0].ContentType);
        Assert.Contains("gone@dest.test", dsn.Parts[0].Body);
        Assert.StartsWith("message/delivery-status", dsn.Parts[1].ContentType);
        Assert.Equal("dns; relay.test", dsn.PerMessage["reporting-mta"]);
        Assert.True(DateTimeOffset.TryParse(dsn.PerMessage["arrival-date"].Replace(" +0000", " +00:00"), out _), dsn.PerMessage["arrival-date"]);
        Assert.Equal(id, dsn.PerMessage["x-nativerelay-queue-id"]);
        var r = dsn.Recipient("gone@dest.test");
        Assert.Equal("rfc822; gone@dest.test", r["final-recipient"]);
        Assert.Equal("failed", r["action"]);
        Assert.Equal("5.1.1", r["status"]);
        Assert.Equal("dns; mx.dest.test", r["remote-mta"]);
        Assert.Equal("smtp; 550 5.1.1 <gone@dest.test>: no such user here", r["diagnostic-code"]);
        Assert.True(r.ContainsKey("last-attempt-date"));
        // The original comes back (small: whole, as message/rfc822), with its own headers.
        Assert.StartsWith("message/rfc822", dsn.Parts[2].ContentType);
        Assert.Contains("Subject: the original subject", dsn.Parts[2].Body);
        Assert.Contains("Message-ID: <dsn-fields@test>", dsn.Parts[2].Body);
        Assert.Contains("The body of the original message.", dsn.Parts[2].Body);
        var bounceEvent = await relay.WaitForEventAsync(id, "bounce");
        Assert.Equal(16, ((string?)bounceEvent["dsn"])?.Length);
    }

    [Fact]
    public async Task A_message_from_the_null_sender_never_causes_a_bounce()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        peers[0].RcptReply = to => $"550 5.1.1 <{to}>: no such user";
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync("", ["gone@dest.test"], MessageText.Simple("nullsender@test"));

        await relay.WaitForEventAsync(id, "failed", "gone@dest.test");
        await relay.Process.WaitForOutputAsync($"{id}: no sender notification: null sender", Waits.Delivery);
        Assert.Empty(relay.Events(id, "bounce"));
        Assert.Equal(0, peers[1].ConnectionCount);
    }

    [Fact]
    public async Task A_message_past_its_lifetime_fails_with_a_dsn()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        peers[0].DataReply = _ => "451 4.2.0 mailbox temporarily unavailable";
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
            config["delivery"]!["maxLifetimeHours"] = 0.001); // 3.6 seconds

        string id = await relay.SendAsync(Sender, ["slow@dest.test"], MessageText.Simple("expired@test", "expiry"));

        var dsn = await WaitForDsnAsync(peers[1], "expired@test");
        var r = dsn.Recipient("slow@dest.test");
        Assert.Equal("failed", r["action"]);
        Assert.Equal("4.2.0", r["status"]); // the last transient error, as Postfix reports it
        Assert.Contains("delivery time expired", r["diagnostic-code"]);
        await relay.WaitForEventAsync(id, "expired", "slow@dest.test");
        Assert.Single(relay.Events(id, "expired"));
        Assert.True(relay.Events(id, "deferred").Count >= 1);
        Assert.Empty(peers[0].Messages);
    }

    [Fact]
    public async Task A_delay_warning_is_sent_once_while_retries_go_on()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        peers[0].DataReply = _ => "451 4.3.0 busy";
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
            config["bounces"] = new JsonObject { ["delayWarningHours"] = 0.0005 }); // 1.8 seconds

        string id = await relay.SendAsync(Sender, ["late@dest.test"], MessageText.Simple("delayed@test", "delay"));

        var dsn = await WaitForDsnAsync(peers[1], "delayed@test");
        var r = dsn.Recipient("late@dest.test");
        Assert.Equal("delayed", r["action"]);
        Assert.Equal("4.3.0", r["status"]);
        Assert.True(r.ContainsKey("will-retry-until"));
        Assert.StartsWith("Delayed Mail", dsn.Header("Subject"));
        // Retries go on, and no second warning comes.
        int seen = relay.Events(id, "deferred").Count;
        await relay.WaitForEventAsync(e => (string?)e["id"] == id && (string?)e["event"] == "deferred" && (int?)e["attempt"] > seen + 1,
            "two more attempts");
        Assert.Single(peers[1].Messages);
        Assert.Single(relay.Events(id, "delayed"));
    }

    [Fact]
    public async Task A_large_message_comes_back_as_headers_only()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        peers[0].RcptReply = to => $"550 5.1.1 <{to}>: no such user";
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
            config["bounces"] = new JsonObject { ["returnFullMaxBytes"] = 2000 });
        string body = string.Join("\r\n", Enumerable.Range(0, 100).Select(i => $"line {i} of a body that will not come back"));

        await relay.SendAsync(Sender, ["gone@dest.test"], MessageText.Simple("large@test", "large", body));

        var dsn = await WaitForDsnAsync(peers[1], "large@test");
        Assert.StartsWith("text/rfc822-headers", dsn.Parts[2].ContentType);
        Assert.Contains("Message-ID: <large@test>", dsn.Parts[2].Body);
        Assert.DoesNotContain("will not come back", dsn.Text);
    }
}
