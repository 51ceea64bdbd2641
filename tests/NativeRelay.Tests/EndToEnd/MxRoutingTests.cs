using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// Finding the next hop (RFC 5321 5.1) with the published binary: a DNS responder and SMTP peers
/// on 127.0.0.2, 127.0.0.3 ... started by the test stand for the Internet.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class MxRoutingTests(ITestOutputHelper log)
{
    private const string Sender = "sender@origin.test";

    [Fact]
    public async Task Mail_goes_to_the_most_preferred_mx_host()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.3");
        // Listed worst first: the order of the answer must not matter, the preference must.
        dns.Mx("pref.test", (20, "mx2.pref.test"), (10, "mx1.pref.test"))
           .A("mx1.pref.test", "127.0.0.2").A("mx2.pref.test", "127.0.0.3");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@pref.test"], MessageText.Simple("pref@test"));

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<pref@test>", "the message");
        Assert.Equal(["rcpt@pref.test"], got.Recipients);
        Assert.Equal(0, peers[1].ConnectionCount);
        var delivered = await relay.WaitForEventAsync(id, "delivered", "rcpt@pref.test");
        Assert.Equal("mx1.pref.test", (string?)delivered["host"]);
        Assert.Equal($"127.0.0.2:{peers.Port}", (string?)delivered["ip"]);
        Assert.Equal(1, (int?)delivered["attempt"]);
    }

    [Fact]
    public async Task A_refused_connection_moves_on_to_the_next_mx_host()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.3");
        // mx1 is an address where nothing listens: the connection is refused.
        dns.Mx("fallback.test", (10, "mx1.fallback.test"), (20, "mx2.fallback.test"))
           .A("mx1.fallback.test", "127.0.0.25").A("mx2.fallback.test", "127.0.0.3");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@fallback.test"], MessageText.Simple("fallback@test"));

        await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<fallback@test>", "the message");
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("mx2.fallback.test", (string?)delivered["host"]);
        Assert.Equal(1, (int?)delivered["attempt"]); // the same attempt, not a retry
        Assert.Empty(relay.Events(id, "deferred"));
    }

    [Fact]
    public async Task A_4xx_greeting_moves_on_to_the_next_mx_host()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.3");
        peers[0].Greeting = "421 4.3.2 mx-1 is too busy";
        dns.Mx("busy.test", (10, "mx1.busy.test"), (20, "mx2.busy.test"))
           .A("mx1.busy.test", "127.0.0.2").A("mx2.busy.test", "127.0.0.3");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@busy.test"], MessageText.Simple("busy@test"));

        await peers[1].WaitForMessageAsync(m => m.Header("Message-ID") == "<busy@test>", "the message");
        Assert.True(peers[0].ConnectionCount >= 1, "the preferred host was not tried first\n" + peers.Describe());
        Assert.Empty(peers[0].Messages);
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal(1, (int?)delivered["attempt"]);
    }

    [Fact]
    public async Task Every_address_of_an_mx_host_is_tried_in_turn()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.3");
        dns.Mx("multi.test", (10, "mx.multi.test")).A("mx.multi.test", "127.0.0.26", "127.0.0.3");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@multi.test"], MessageText.Simple("multi@test"));

        await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<multi@test>", "the message");
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal($"127.0.0.3:{peers.Port}", (string?)delivered["ip"]);
        Assert.Equal(1, (int?)delivered["attempt"]);
    }

    [Fact]
    public async Task A_domain_without_mx_records_is_its_own_mail_host()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        dns.A("implicit.test", "127.0.0.2"); // no MX: NODATA for MX, then A (RFC 5321 5.1)
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@implicit.test"], MessageText.Simple("implicit@test"));

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<implicit@test>", "the message");
        Assert.Equal(["rcpt@implicit.test"], got.Recipients);
        Assert.True(dns.Queries("implicit.test", "MX") >= 1, dns.Describe());
        Assert.True(dns.Queries("implicit.test", "A") >= 1, dns.Describe());
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("implicit.test", (string?)delivered["host"]);
    }

    [Fact]
    public async Task Recipients_in_different_domains_go_to_their_own_hosts()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.3");
        dns.Mx("one.test", (10, "mx.one.test")).A("mx.one.test", "127.0.0.2")
           .Mx("two.test", (10, "mx.two.test")).A("mx.two.test", "127.0.0.3");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        await relay.SendAsync(Sender, ["a@one.test", "b@two.test", "c@one.test"], MessageText.Simple("split@test"));

        var first = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<split@test>", "its part");
        var second = await peers[1].WaitForMessageAsync(m => m.Header("Message-ID") == "<split@test>", "its part");
        Assert.Equal(["a@one.test", "c@one.test"], first.Recipients);
        Assert.Equal(["b@two.test"], second.Recipients);
        Assert.Single(peers[0].Messages);
        Assert.Single(peers[1].Messages);
    }

    [Fact]
    public async Task Domains_that_share_mx_hosts_share_the_destination()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        dns.Mx("first.test", (10, "mx.shared.test")).Mx("second.test", (5, "mx.shared.test")).A("mx.shared.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        await relay.SendAsync(Sender, ["x@first.test", "y@second.test"], MessageText.Simple("shared@test"));

        // One destination (keyed by the next-hop set, not the domain): one transaction for both.
        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<shared@test>", "the message");
        Assert.Equal(["x@first.test", "y@second.test"], got.Recipients);
        Assert.Single(peers[0].Messages);
    }

    [Fact]
    public async Task Static_routes_override_mx_for_a_domain_and_its_subdomains()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.3");
        dns.Mx("a.corp.test", (10, "mx.corp.test")).Mx("corp.test", (10, "mx.corp.test")).A("mx.corp.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
            config["routing"]!["routes"] = new System.Text.Json.Nodes.JsonObject
            {
                ["*.corp.test"] = new System.Text.Json.Nodes.JsonObject { ["hosts"] = new System.Text.Json.Nodes.JsonArray($"127.0.0.3:{peers.Port}") },
            });

        await relay.SendAsync(Sender, ["sub@a.corp.test"], MessageText.Simple("routed@test"));
        await relay.SendAsync(Sender, ["apex@corp.test"], MessageText.Simple("apex@test"));

        // The wildcard takes the subdomain to the route's host; the apex is not covered and uses its MX.
        await peers[1].WaitForMessageAsync(m => m.Header("Message-ID") == "<routed@test>", "the routed message");
        await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<apex@test>", "the apex message");
        Assert.DoesNotContain(peers[0].Messages, m => m.Header("Message-ID") == "<routed@test>");
        Assert.Equal(0, dns.Queries("a.corp.test", "MX"));
    }

    [Fact]
    public async Task An_address_literal_is_delivered_to_that_address_when_allowed()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.3");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
            config["routing"]!["allowAddressLiterals"] = true);

        await relay.SendAsync(Sender, ["user@[127.0.0.3]"], MessageText.Simple("literal@test"));

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<literal@test>", "the message");
        Assert.Equal(["user@[127.0.0.3]"], got.Recipients);
        Assert.Equal(0, dns.TotalQueries);
    }

    [Fact]
    public async Task Mx_answers_are_cached_for_their_ttl()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        dns.Mx("cached.test", (10, "mx.cached.test")).A("mx.cached.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        for (int i = 0; i < 3; i++)
        {
            await relay.SendAsync(Sender, ["rcpt@cached.test"], MessageText.Simple($"cached-{i}@test"));
            await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == $"<cached-{i}@test>", $"message {i}");
        }

        Assert.Equal(1, dns.Queries("cached.test", "MX"));
        Assert.Equal(1, dns.Queries("mx.cached.test", "A"));
    }
}
