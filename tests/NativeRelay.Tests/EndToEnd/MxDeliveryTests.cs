using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// Delivery loops and the SMTP client against peers on loopback: isolation of a hung destination,
/// the per-destination connection limit under load (configured, and the default with slow
/// start), STARTTLS by policy, BDAT, and the peer's recipient limit.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class MxDeliveryTests(ITestOutputHelper log)
{
    private const string Sender = "sender@origin.test";

    [Fact]
    public async Task A_destination_that_hangs_does_not_delay_another()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.3");
        peers[0].HangBeforeGreeting = true;
        dns.Mx("hung.test", (10, "mx.hung.test")).A("mx.hung.test", "127.0.0.2")
           .Mx("fine.test", (10, "mx.fine.test")).A("mx.fine.test", "127.0.0.3");
        // One delivery loop: both destinations share the thread, so only non-blocking code keeps them apart.
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
        {
            config["delivery"]!["loops"] = 1;
            config["delivery"]!["commandTimeoutSeconds"] = 300;
        });

        var stuck = new List<string>();
        for (int i = 0; i < 5; i++)
            stuck.Add(await relay.SendAsync(Sender, [$"r{i}@hung.test"], MessageText.Simple($"hung-{i}@test")));
        await peers[0].WaitUntilAsync(() => peers[0].OpenConnections >= 1, Waits.Delivery, "a connection from the relay");

        string id = await relay.SendAsync(Sender, ["rcpt@fine.test"], MessageText.Simple("fine@test"));

        await peers[1].WaitForMessageAsync(m => m.Header("Message-ID") == "<fine@test>", "the message to the healthy destination");
        await relay.WaitForEventAsync(id, "delivered");
        // The hung destination is still waiting for its greeting: nothing of it was decided meanwhile.
        Assert.True(peers[0].OpenConnections >= 1, peers.Describe());
        foreach (var hung in stuck)
            Assert.Empty(relay.Events(hung));
    }

    [Fact]
    public async Task The_connection_limit_per_destination_holds_under_1000_queued_messages()
    {
        const int Messages = 1000, Limit = 3, Clients = 10;
        await using var bulk = await SlowDestination.StartAsync(log, "bulk", TimeSpan.FromMilliseconds(2), config =>
        {
            config["delivery"]!["connectionsPerDestination"] = Limit;
            config["delivery"]!["initialConnectionsPerDestination"] = Limit;
            config["delivery"]!["messagesPerConnection"] = 100;
        });
        var peers = bulk.Peers;

        await bulk.SendFromClientsAsync(Clients, Messages);

        await bulk.AssertAllArrivedWithinLimitAsync(Messages, Limit);
        Assert.True(peers[0].MaxConcurrentConnections >= 2, $"the messages went over one connection only\n{peers.Describe()}");
        // messagesPerConnection renews connections, so there were more than Limit connections in all.
        Assert.True(peers[0].ConnectionCount >= Messages / 100, peers.Describe());
    }

    [Fact]
    public async Task By_default_a_destination_grows_past_twenty_connections_and_stops_at_32()
    {
        // The default limit (docs/CONFIG.md) with slow start from 5: a slow destination and a
        // queue far longer than the limit make the window grow to the limit and no further.
        const int Messages = 200, Clients = 40, DefaultLimit = 32;
        await using var wide = await SlowDestination.StartAsync(log, "wide", TimeSpan.FromMilliseconds(100));

        await wide.SendFromClientsAsync(Clients, Messages);

        await wide.AssertAllArrivedWithinLimitAsync(Messages, DefaultLimit);
        Assert.True(wide.Peers[0].MaxConcurrentConnections > 20,
            $"only {wide.Peers[0].MaxConcurrentConnections} connections were open at once under a queue of {Messages}.\n{wide.Peers.Describe()}");
    }

    [Fact]
    public async Task A_connection_saying_goodbye_keeps_its_slot_until_it_is_closed()
    {
        // The peer takes two seconds to answer QUIT: the second message waits for that goodbye
        // instead of opening a second connection beside it.
        await using var bye = await SlowDestination.StartOneConnectionAsync(log, "bye", quitDelay: TimeSpan.FromSeconds(2));

        await bye.SendSecondWhileTheFirstConnectionSaysGoodbyeAsync();

        Assert.True(bye.Peers[0].MaxConcurrentConnections == 1,
            $"{bye.Peers[0].MaxConcurrentConnections} connections were open at once; the limit is 1.\n{bye.Peers.Describe()}");
    }

    [Fact]
    public async Task A_peer_that_never_answers_quit_holds_the_slot_only_for_the_quit_timeout()
    {
        // The command timeout is 300 s; QUIT's reply is waited for 10 s at most, then the
        // connection is closed and the queued message goes over a new one, well within the
        // command timeout.
        await using var mute = await SlowDestination.StartOneConnectionAsync(log, "mute", quitDelay: TimeSpan.FromMinutes(5));

        var (quitSeen, second) = await mute.SendSecondWhileTheFirstConnectionSaysGoodbyeAsync();

        // And the slot was held meanwhile: the second connection waited for the QUIT bound. The
        // test saw the QUIT after the relay sent it, so the true wait is longer than this one.
        var waited = second.ReceivedAt - quitSeen;
        Assert.True(waited >= TimeSpan.FromSeconds(5), $"the second message came {waited.TotalSeconds:0.0} s after the QUIT.\n{mute.Peers.Describe()}");
    }

    /// <summary>A relay whose mail for DOMAIN.test goes to one peer that takes its time over each DATA (or QUIT).</summary>
    private sealed class SlowDestination(string domain, TestDnsServer dns, PeerGroup peers, MxRelay relay) : IAsyncDisposable
    {
        public PeerGroup Peers => peers;

        /// <summary>One connection at most, idle for a second before QUIT, a peer slow to answer QUIT; the command timeout 300 s.</summary>
        public static async Task<SlowDestination> StartOneConnectionAsync(ITestOutputHelper log, string domain, TimeSpan quitDelay)
        {
            var destination = await StartAsync(log, domain, TimeSpan.Zero, config =>
            {
                config["delivery"]!["connectionsPerDestination"] = 1;
                config["delivery"]!["idleConnectionSeconds"] = 1;
                config["delivery"]!["commandTimeoutSeconds"] = 300;
            });
            destination.Peers[0].QuitDelay = quitDelay;
            return destination;
        }

        /// <summary>
        /// Sends one message, waits until its idle connection has said QUIT, then sends a second
        /// one; the peer gets it over a second connection and the relay logs it delivered.
        /// Returns when the test saw the QUIT (UTC) and the second message as the peer got it.
        /// </summary>
        public async Task<(DateTime QuitSeen, PeerMessage Second)> SendSecondWhileTheFirstConnectionSaysGoodbyeAsync()
        {
            await relay.SendAsync(Sender, [$"a@{domain}.test"], MessageText.Simple($"{domain}-1@test"));
            await peers[0].WaitUntilAsync(() => peers[0].QuitCount == 1, Waits.Delivery, "QUIT from the idle connection");
            var quitSeen = DateTime.UtcNow;
            string id = await relay.SendAsync(Sender, [$"b@{domain}.test"], MessageText.Simple($"{domain}-2@test"));
            var second = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == $"<{domain}-2@test>", "the second message");
            await relay.WaitForEventAsync(id, "delivered");
            Assert.Equal(2, peers[0].ConnectionCount);
            return (quitSeen, second);
        }

        public static async Task<SlowDestination> StartAsync(ITestOutputHelper log, string domain, TimeSpan dataDelay,
            Action<JsonObject>? configure = null)
        {
            var dns = new TestDnsServer();
            var peers = PeerGroup.Start("127.0.0.2");
            peers[0].DataDelay = dataDelay;
            dns.Mx($"{domain}.test", (10, $"mx.{domain}.test")).A($"mx.{domain}.test", "127.0.0.2");
            try
            {
                return new SlowDestination(domain, dns, peers, await MxRelay.StartAsync(log, dns, peers.Port, configure));
            }
            catch
            {
                await peers.DisposeAsync();
                await dns.DisposeAsync();
                throw;
            }
        }

        // Each client sends its share of the messages over one session.
        public Task SendFromClientsAsync(int clients, int messages) =>
            Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
            {
                await using var client = await TestSmtpClient.ConnectAndGreetAsync(relay.Port);
                await client.EhloAsync();
                for (int i = 0; i < messages / clients; i++)
                    await client.SendAcceptedAsync(Sender, [$"r{c}-{i}@{domain}.test"], MessageText.Simple($"{domain}-{c}-{i}@test"));
            })));

        public async Task AssertAllArrivedWithinLimitAsync(int messages, int limit)
        {
            await peers[0].WaitUntilAsync(() => peers[0].Messages.Count >= messages, TimeSpan.FromSeconds(120), $"{messages} messages");
            Assert.True(peers[0].MaxConcurrentConnections <= limit,
                $"{peers[0].MaxConcurrentConnections} connections were open at once; the limit is {limit}.\n{peers.Describe()}");
            Assert.Equal(messages, peers[0].Messages.Select(m => m.Header("Message-ID")).Distinct().Count());
        }

        public async ValueTask DisposeAsync()
        {
            await relay.DisposeAsync();
            await peers.DisposeAsync();
            await dns.DisposeAsync();
        }
    }

    [Fact]
    public async Task Starttls_is_used_when_the_peer_offers_it()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        dns.Mx("tls.test", (10, "mx.tls.test")).A("mx.tls.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@tls.test"], MessageText.Simple("tls@test"));

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<tls@test>", "the message");
        Assert.True(got.Tls, "the message was not sent over TLS");
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.StartsWith("TLSv1.", (string?)delivered["tls"]);
        Assert.EndsWith("unverified", (string?)delivered["tls"]); // self-signed: recorded, not enforced
    }

    [Fact]
    public async Task A_failed_tls_handshake_falls_back_to_plain_text_under_the_opportunistic_policy()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        peers[0].BreakTlsHandshake = true;
        dns.Mx("badtls.test", (10, "mx.badtls.test")).A("mx.badtls.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@badtls.test"], MessageText.Simple("badtls@test"));

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<badtls@test>", "the message");
        Assert.False(got.Tls);
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal(1, (int?)delivered["attempt"]);
        Assert.Null(delivered["tls"]);
        Assert.True(peers[0].ConnectionCount >= 2, peers.Describe()); // the TLS attempt, then plain text
    }

    [Fact]
    public async Task Required_tls_defers_mail_for_a_peer_without_starttls()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        dns.Mx("plain.test", (10, "mx.plain.test")).A("mx.plain.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
            config["routing"]!["routes"] = new JsonObject { ["plain.test"] = new JsonObject { ["tls"] = "required" } });

        string id = await relay.SendAsync(Sender, ["rcpt@plain.test"], MessageText.Simple("plain@test"));

        var deferred = await relay.WaitForEventAsync(id, "deferred");
        Assert.Contains("4.7.4 TLS is required", (string?)deferred["reply"]);
        Assert.Empty(peers[0].Messages);
        Assert.Equal(0, peers[0].DataAttemptCount);
    }

    [Fact]
    public async Task Tls_policy_none_never_starts_tls()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        dns.Mx("notls.test", (10, "mx.notls.test")).A("mx.notls.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
            config["delivery"]!["tlsPolicy"] = "none");

        await relay.SendAsync(Sender, ["rcpt@notls.test"], MessageText.Simple("notls@test"));

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<notls@test>", "the message");
        Assert.False(got.Tls);
    }

    [Fact]
    public async Task Bdat_carries_the_message_unchanged_when_the_peer_offers_chunking()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].Chunking = true;
        dns.Mx("chunk.test", (10, "mx.chunk.test")).A("mx.chunk.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);
        var original = MessageText.Build(
            "From: sender@origin.test",
            "Subject: bdat",
            "Message-ID: <bdat@test>",
            "",
            ".a line that starts with a dot",
            "..two dots",
            ".",
            new string('x', 900),
            "end");

        await relay.SendAsync(Sender, ["rcpt@chunk.test"], original);

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<bdat@test>", "the message");
        Assert.True(got.Bdat, "BDAT was not used");
        Assert.True(MessageText.TrySplitFirstField(got.Data, out var received, out var rest), "no Received header");
        Assert.StartsWith("Received: ", Encoding.ASCII.GetString(received));
        Assert.Equal(original, rest);
    }

    [Fact]
    public async Task Recipients_beyond_the_peer_limit_go_in_further_transactions()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].MaxRecipientsPerTransaction = 2;
        dns.Mx("limit.test", (10, "mx.limit.test")).A("mx.limit.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);
        string[] recipients = ["r1@limit.test", "r2@limit.test", "r3@limit.test", "r4@limit.test", "r5@limit.test"];

        string id = await relay.SendAsync(Sender, recipients, MessageText.Simple("limit@test"));

        await peers[0].WaitUntilAsync(() => peers[0].Messages.SelectMany(m => m.Recipients).Count() >= 5, Waits.Delivery, "all five recipients");
        var messages = peers[0].Messages;
        Assert.Equal([2, 2, 1], messages.Select(m => m.Recipients.Count));
        Assert.Equal(recipients, messages.SelectMany(m => m.Recipients));
        Assert.Single(messages.Select(m => m.ConnectionNumber).Distinct()); // at once, on the same connection
        Assert.Empty(relay.Events(id, "deferred"));
    }
}
