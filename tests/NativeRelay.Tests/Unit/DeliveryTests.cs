using NativeRelay.Config;
using NativeRelay.Delivery;
using NativeRelay.Spool;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// The delivery side in process (real spool, scheduler, loops and SMTP client; DNS and peers on
/// loopback): what the envelope's DSN requests (RFC 3461), SMTPUTF8 and bounces of bounces do.
/// </summary>
public sealed class DeliveryTests
{
    private const string Sender = "alice@origin.test";

    private static byte[] Message(string messageId, string subject = "unit") => MessageText.Simple(messageId, subject);

    private static async Task<DsnMessage> DsnAboutAsync(DeliveryWorld world, string messageId)
    {
        var bounce = await world.Peers[1].WaitForMessageAsync(m => m.MailFrom == "" && m.DataText.Contains(messageId, StringComparison.Ordinal),
            $"a notification about {messageId}");
        return DsnMessage.Parse(bounce.Data);
    }

    [Fact]
    public async Task Notify_never_suppresses_the_bounce()
    {
        await using var world = await DeliveryWorld.StartAsync();
        world.Peers[0].RcptReply = to => $"550 5.1.1 <{to}>: no such user";

        var message = await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["gone@dest.test"], notify: [DsnNotify.Never]), Message("never@test"));

        await world.WaitUntilGoneAsync(message);
        await world.Peers[1].AssertStaysTrueAsync(() => world.Peers[1].ConnectionCount == 0, TimeSpan.FromSeconds(1), "no notification");
        Assert.Equal(RecipientState.Failed, message.Recipients[0]);
    }

    [Fact]
    public async Task Notify_success_gets_a_relayed_notice_from_a_peer_without_dsn()
    {
        await using var world = await DeliveryWorld.StartAsync();

        await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["ok@dest.test"], notify: [DsnNotify.Success | DsnNotify.Failure],
            orcpt: ["rfc822;original@dest.test"], envId: "ENV-42"), Message("relayed@test"));

        await world.Peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<relayed@test>", "the message");
        var dsn = await DsnAboutAsync(world, "relayed@test");
        var r = dsn.Recipient("ok@dest.test");
        Assert.Equal("relayed", r["action"]);
        Assert.StartsWith("2.", r["status"]);
        Assert.Equal("rfc822;original@dest.test", r["original-recipient"]);
        Assert.Equal("ENV-42", dsn.PerMessage["original-envelope-id"]);
        Assert.Equal("Successful Mail Delivery Report", dsn.Header("Subject"));
    }

    [Fact]
    public async Task Dsn_requests_go_on_to_a_peer_that_offers_dsn()
    {
        await using var world = await DeliveryWorld.StartAsync();
        world.Peers[0].Dsn = true;

        var message = await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["ok@dest.test"], EnvelopeFlags.ReturnHeadersOnly,
            notify: [DsnNotify.Success | DsnNotify.Delay], orcpt: ["rfc822;a+b=c@dest.test"], envId: "id with space"), Message("passed@test"));

        var got = await world.Peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<passed@test>", "the message");
        Assert.Contains("RET=HDRS", got.MailParameters);
        Assert.Contains("ENVID=id+20with+20space", got.MailParameters);
        Assert.Equal("NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a+2Bb+3Dc@dest.test", got.RecipientParameters[0]);
        await world.WaitUntilGoneAsync(message);
        // The next hop now answers for the success notice: none from here.
        await world.Peers[1].AssertStaysTrueAsync(() => world.Peers[1].ConnectionCount == 0, TimeSpan.FromSeconds(1), "no notification");
    }

    [Fact]
    public async Task A_failure_dsn_carries_envid_and_orcpt()
    {
        await using var world = await DeliveryWorld.StartAsync();
        world.Peers[0].RcptReply = to => $"550 5.1.1 <{to}>: no such user";

        await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["gone@dest.test"], orcpt: ["rfc822;Gone@Dest.Test"], envId: "QQ314159"),
            Message("orcpt@test"));

        var dsn = await DsnAboutAsync(world, "orcpt@test");
        Assert.Equal("QQ314159", dsn.PerMessage["original-envelope-id"]);
        var r = dsn.Recipient("gone@dest.test");
        Assert.Equal("rfc822;Gone@Dest.Test", r["original-recipient"]);
        Assert.Equal("failed", r["action"]);
    }

    [Fact]
    public async Task Ret_hdrs_returns_headers_and_ret_full_the_whole_message()
    {
        await using var world = await DeliveryWorld.StartAsync(o => o.Bounces.ReturnFullMaxBytes = 100);
        world.Peers[0].RcptReply = to => $"550 5.1.1 <{to}>: no such user";

        await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["a@dest.test"], EnvelopeFlags.ReturnFull), Message("full@test", "body comes back"));
        await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["b@dest.test"], EnvelopeFlags.ReturnHeadersOnly), Message("hdrs@test"));
        await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["c@dest.test"]), Message("default@test"));

        var full = await DsnAboutAsync(world, "full@test");
        Assert.StartsWith("message/rfc822", full.Parts[2].ContentType);
        Assert.Contains("Hello from the end-to-end tests.", full.Parts[2].Body);
        var headers = await DsnAboutAsync(world, "hdrs@test");
        Assert.StartsWith("text/rfc822-headers", headers.Parts[2].ContentType);
        Assert.DoesNotContain("Hello from the end-to-end tests.", headers.Text);
        // No RET: above returnFullMaxBytes (100 here), headers only.
        var byDefault = await DsnAboutAsync(world, "default@test");
        Assert.StartsWith("text/rfc822-headers", byDefault.Parts[2].ContentType);
    }

    [Fact]
    public async Task An_smtputf8_message_to_a_peer_without_smtputf8_fails_with_5_6_7()
    {
        await using var world = await DeliveryWorld.StartAsync();
        world.Peers[1].SmtpUtf8 = true; // the sender's own server takes the (internationalized) notification

        var message = await world.QueueAsync(DeliveryWorld.Envelope("jöran@origin.test", ["rcpt@dest.test"], EnvelopeFlags.SmtpUtf8 | EnvelopeFlags.EightBitMime),
            Message("utf8@test"));

        var dsn = await DsnAboutAsync(world, "utf8@test");
        var r = dsn.Recipient("rcpt@dest.test");
        Assert.Equal("failed", r["action"]);
        Assert.Equal("5.6.7", r["status"]);
        Assert.StartsWith("message/global-delivery-status", dsn.Parts[1].ContentType);
        Assert.Equal(0, world.Peers[0].DataAttemptCount);
        await world.WaitUntilGoneAsync(message);
        var bounce = world.Peers[1].Messages.Single();
        Assert.Equal(["jöran@origin.test"], bounce.Recipients);
    }

    [Fact]
    public async Task An_smtputf8_message_goes_with_smtputf8_to_a_peer_that_offers_it()
    {
        await using var world = await DeliveryWorld.StartAsync();
        world.Peers[0].SmtpUtf8 = true;

        await world.QueueAsync(DeliveryWorld.Envelope("jöran@origin.test", ["rcpt@dest.test"], EnvelopeFlags.SmtpUtf8), Message("utf8ok@test"));

        var got = await world.Peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<utf8ok@test>", "the message");
        Assert.Equal("jöran@origin.test", got.MailFrom);
        Assert.Contains("SMTPUTF8", got.MailParameters);
        Assert.Contains("BODY=8BITMIME", got.MailParameters);
    }

    [Fact]
    public async Task A_bounce_that_fails_is_dropped_without_another_bounce()
    {
        await using var world = await DeliveryWorld.StartAsync();
        world.Peers[0].RcptReply = to => $"550 5.1.1 <{to}>: no such user";

        var message = await world.QueueAsync(DeliveryWorld.Envelope("", ["gone@dest.test"], EnvelopeFlags.IsBounce), Message("double@test"));

        await world.WaitUntilGoneAsync(message);
        Assert.Equal(RecipientState.Failed, message.Recipients[0]);
        await world.Peers[1].AssertStaysTrueAsync(() => world.Peers[1].ConnectionCount == 0, TimeSpan.FromSeconds(1), "no notification");
    }

    [Fact]
    public async Task One_dsn_covers_every_recipient_that_failed_in_an_attempt()
    {
        await using var world = await DeliveryWorld.StartAsync(null, "127.0.0.3");
        world.Dns.Mx("other.test", (10, "mx.other.test")).A("mx.other.test", "127.0.0.3");
        world.Peers[0].RcptReply = to => $"550 5.1.1 <{to}>: no such user";
        world.Peers[2].RcptReply = to => to.StartsWith("x@", StringComparison.Ordinal) ? "553 5.7.1 not here" : "250 2.1.5 Ok";

        var message = await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["a@dest.test", "x@other.test", "y@other.test", "z@nowhere.test"]),
            Message("combined@test"));

        await world.WaitUntilGoneAsync(message);
        var dsn = await DsnAboutAsync(world, "combined@test");
        Assert.Equal(3, dsn.PerRecipient.Count);
        Assert.Equal("5.1.1", dsn.Recipient("a@dest.test")["status"]);
        Assert.Equal("5.7.1", dsn.Recipient("x@other.test")["status"]);
        Assert.Equal("5.1.2", dsn.Recipient("z@nowhere.test")["status"]);
        Assert.Single(world.Peers[1].Messages);
        Assert.Equal([RecipientState.Failed, RecipientState.Failed, RecipientState.Delivered, RecipientState.Failed], message.Recipients);
    }

    [Fact]
    public async Task Outcomes_are_durable_across_a_restart()
    {
        await using var world = await DeliveryWorld.StartAsync();
        world.Peers[0].RcptReply = to => to.StartsWith("later@", StringComparison.Ordinal) ? "451 4.2.1 later" : "250 2.1.5 Ok";

        var message = await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["now@dest.test", "later@dest.test"]), Message("durable@test"));
        await world.Peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<durable@test>", "the first recipient's delivery");
        await world.WaitUntilAsync(() => world.Scheduler.Show(message.IdText)?.Attempts >= 1, "the first attempt settled");

        world.Peers[0].RcptReply = null;
        await world.RestartAsync();

        var recovered = Assert.Single(world.Recovered);
        Assert.Equal([RecipientState.Delivered, RecipientState.Pending], recovered.Recipients);
        await world.Peers[0].WaitUntilAsync(() => world.Peers[0].Messages.Count == 2, Waits.Delivery, "the retry");
        Assert.Equal(["later@dest.test"], world.Peers[0].Messages[1].Recipients);
    }

    [Fact]
    public async Task An_address_without_a_domain_is_routed_as_this_relays_own()
    {
        // "postmaster" (RFC 5321 4.5.1) goes where mail for relay.test goes: here, the smarthost.
        await using var world = await DeliveryWorld.StartAsync(o =>
            o.Routing.Routes["*"] = new NativeRelay.Config.RouteOptions { Hosts = ["mx.dest.test"] });

        await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["postmaster", "someone@anywhere.example"]), Message("postmaster@test"));

        var got = await world.Peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<postmaster@test>", "the message");
        Assert.Equal(["postmaster", "someone@anywhere.example"], got.Recipients);
        Assert.Equal(0, world.Dns.Queries("anywhere.example", "MX"));
    }

    [Fact]
    public async Task A_rate_limit_spaces_the_transactions_to_a_destination()
    {
        // 10 per second: six transactions start at least five intervals of 100 ms apart. The peer
        // sees each message a transaction's length after its start, and on a loaded machine one
        // transaction can take a few hundred ms more than another, so the check leaves room for
        // that: without the limit, six messages arrive within a few ms.
        await using var world = await DeliveryWorld.StartAsync(o =>
            o.Routing.Routes["dest.test"] = new NativeRelay.Config.RouteOptions { MaxMessagesPerSecond = 10 });

        for (int i = 0; i < 6; i++)
            await world.QueueAsync(DeliveryWorld.Envelope(Sender, [$"r{i}@dest.test"]), Message($"rate-{i}@test"));

        await world.Peers[0].WaitUntilAsync(() => world.Peers[0].Messages.Count == 6, Waits.Delivery, "six messages");
        var times = world.Peers[0].Messages.Select(m => m.ReceivedAt).Order().ToArray();
        Assert.True(times[^1] - times[0] >= TimeSpan.FromMilliseconds(200),
            $"six messages within {(times[^1] - times[0]).TotalMilliseconds:0} ms at 10 per second\n{world.Peers.Describe()}");
    }

    [Fact]
    public void Retry_backoff_grows_exponentially_with_jitter_up_to_the_ceiling()
    {
        var policy = new RetryPolicy(new DeliveryOptions { RetryInitialSeconds = 60, RetryMaxSeconds = 3600 });
        for (int i = 0; i < 50; i++)
        {
            long first = policy.NextAttemptUnixMs(1, 0);
            Assert.InRange(first, 48_000, 72_000);
            long third = policy.NextAttemptUnixMs(3, 0);
            Assert.InRange(third, 192_000, 288_000);
            long late = policy.NextAttemptUnixMs(30, 0);
            Assert.InRange(late, 2_880_000, 4_320_000);
        }
        Assert.True(policy.IsExpired(0, (long)TimeSpan.FromDays(5).TotalMilliseconds + 1));
        Assert.False(policy.IsExpired(0, (long)TimeSpan.FromDays(5).TotalMilliseconds - 1));
    }

    [Theory]
    [InlineData(DsnNotify.None, DsnNotify.Failure, true)]
    [InlineData(DsnNotify.None, DsnNotify.Delay, true)]
    [InlineData(DsnNotify.None, DsnNotify.Success, false)]
    [InlineData(DsnNotify.Never, DsnNotify.Failure, false)]
    [InlineData(DsnNotify.Success, DsnNotify.Failure, false)]
    [InlineData(DsnNotify.Success | DsnNotify.Failure, DsnNotify.Failure, true)]
    [InlineData(DsnNotify.Delay, DsnNotify.Delay, true)]
    public void Notify_decides_which_notices_a_recipient_gets(DsnNotify notify, DsnNotify what, bool wanted)
    {
        var envelope = DeliveryWorld.Envelope(Sender, ["r@dest.test"], notify: [notify]);
        Assert.Equal(wanted, DeliveryScheduler.Wants(envelope, 0, what));
    }
}
