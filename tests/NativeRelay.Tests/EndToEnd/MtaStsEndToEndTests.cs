using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// MTA-STS (RFC 8461) end to end: the published relay asks the tests' DNS for "_mta-sts" TXT and
/// the policy host's address, fetches the policy over HTTPS from a server the test runs on
/// 127.0.0.5 with a certificate of the tests' CA (--ca-file, outboundTls.mtaStsPort), and
/// delivers to MX peers on loopback. Also "TLS-Required: No" (RFC 8689 5).
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class MtaStsEndToEndTests(ITestOutputHelper log)
{
    private const string Sender = "sender@origin.test";
    private const string PolicyIp = "127.0.0.5";

    private static string Policy(string mode, params string[] mx) =>
        $"version: STSv1\r\nmode: {mode}\r\n{string.Concat(mx.Select(m => $"mx: {m}\r\n"))}max_age: 86400\r\n";

    private sealed class World : IAsyncDisposable
    {
        public required TestPki Pki { get; init; }
        public required TempDir Dir { get; init; }
        public required TestDnsServer Dns { get; init; }
        public required PeerGroup Peers { get; init; }
        public required TestHttpsServer PolicyServer { get; set; }
        public string CaFile => Pki.WriteRoot(Dir.Path);

        public async ValueTask DisposeAsync()
        {
            await PolicyServer.DisposeAsync();
            await Peers.DisposeAsync();
            await Dns.DisposeAsync();
            Dir.Dispose();
            Pki.Dispose();
        }
    }

    /// <summary>domain's MX is mx.DOMAIN at 127.0.0.2 with a CA certificate for it; its policy is served by the test's HTTPS server.</summary>
    private static World Start(string domain, string policy, string id = "1", bool dnssec = false)
    {
        var pki = new TestPki();
        var dir = new TempDir("nativerelay-sts");
        var dns = new TestDnsServer { Dnssec = dnssec };
        var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        peers[0].ServerCertificate = pki.Issue([$"mx.{domain}"]);
        var server = new TestHttpsServer(PolicyIp, pki.Issue([$"mta-sts.{domain}"])) { Body = policy };
        dns.Mx(domain, (10, $"mx.{domain}")).A($"mx.{domain}", "127.0.0.2")
           .Txt($"_mta-sts.{domain}", $"v=STSv1; id={id};")
           .A($"mta-sts.{domain}", PolicyIp);
        return new World { Pki = pki, Dir = dir, Dns = dns, Peers = peers, PolicyServer = server };
    }

    private Task<MxRelay> StartRelayAsync(World world, int? policyPort = null, params string[] flags) =>
        MxRelay.StartAsync(log, world.Dns, world.Peers.Port,
            config => config["outboundTls"] = new JsonObject { ["caFile"] = world.CaFile, ["mtaStsPort"] = policyPort ?? world.PolicyServer.Port },
            extraFlags: flags);

    [Fact]
    public async Task Enforce_delivers_over_verified_tls_to_an_mx_the_policy_names()
    {
        await using var world = Start("sts.test", Policy("enforce", "mx.sts.test"));
        await using var relay = await StartRelayAsync(world);

        string id = await relay.SendAsync(Sender, ["rcpt@sts.test"], MessageText.Simple("sts-good@test"));

        var got = await world.Peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<sts-good@test>", "the message");
        Assert.True(got.Tls);
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("mta-sts", (string?)delivered["tlsPolicy"]);
        Assert.Equal("mta-sts", (string?)delivered["tlsVerified"]);
        var request = Assert.Single(world.PolicyServer.Requests);
        Assert.Equal("/.well-known/mta-sts.txt", request.Path);
        Assert.True(File.Exists(Path.Combine(relay.Dir.Spool, "mta-sts", "sts.test.policy")));
    }

    [Fact]
    public async Task Enforce_refuses_an_mx_the_policy_does_not_name_and_defers()
    {
        await using var world = Start("mismatch.test", Policy("enforce", "mx.elsewhere.test"));
        await using var relay = await StartRelayAsync(world);

        string id = await relay.SendAsync(Sender, ["rcpt@mismatch.test"], MessageText.Simple("sts-mismatch@test"));

        var deferred = await relay.WaitForEventAsync(id, "deferred");
        Assert.Contains("4.7.5 MTA-STS: mx.mismatch.test is not an MX host the policy of mismatch.test names", (string?)deferred["reply"]);
        Assert.Equal("mta-sts", (string?)deferred["tlsPolicy"]);
        Assert.Equal("validation-failure", (string?)deferred["tlsFailure"]);
        Assert.Empty(world.Peers[0].Messages);
        Assert.Equal(0, world.Peers[0].ConnectionCount);
    }

    [Theory]
    [InlineData("wrong-name")]
    [InlineData("stripped")]
    public async Task Enforce_refuses_an_mx_whose_tls_does_not_verify(string attack)
    {
        await using var world = Start("stsbad.test", Policy("enforce", "*.stsbad.test"));
        if (attack == "stripped")
            world.Peers[0].StartTls = false;
        else
            world.Peers[0].ServerCertificate = world.Pki.Issue(["mx.other.test"]);
        await using var relay = await StartRelayAsync(world);

        string id = await relay.SendAsync(Sender, ["rcpt@stsbad.test"], MessageText.Simple($"sts-{attack}@test"));

        var deferred = await relay.WaitForEventAsync(id, "deferred");
        Assert.Contains(attack == "stripped" ? "4.7.4 TLS is required" : "MTA-STS: certificate does not name the host", (string?)deferred["reply"]);
        Assert.Empty(world.Peers[0].Messages);
        Assert.Equal(0, world.Peers[0].RcptAttempts("rcpt@stsbad.test"));
    }

    [Fact]
    public async Task Testing_mode_delivers_to_a_mismatched_mx_and_says_so()
    {
        await using var world = Start("ststest.test", Policy("testing", "mx.elsewhere.test"));
        world.Peers[0].ServerCertificate = TestPki.SelfSigned("mx.ststest.test");
        world.Dns.Txt("_smtp._tls.ststest.test", "v=TLSRPTv1; rua=mailto:tlsrpt@ststest.test");
        await using var relay = await StartRelayAsync(world);

        string id = await relay.SendAsync(Sender, ["rcpt@ststest.test"], MessageText.Simple("sts-testing@test"));

        await world.Peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<sts-testing@test>", "the message");
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("mta-sts-testing", (string?)delivered["tlsPolicy"]);
        Assert.Equal("encrypted", (string?)delivered["tlsVerified"]);

        // What enforce would have refused is reported: the day's TLS-RPT counts have the failure.
        string counts = Path.Combine(relay.Dir.Spool, "tls-rpt", DateTime.UtcNow.ToString("yyyy-MM-dd"), "ststest.test.json");
        var deadline = DateTime.UtcNow + Waits.Delivery;
        while (!(File.Exists(counts) && File.ReadAllText(counts).Contains("\"result-type\": \"validation-failure\"")))
        {
            Assert.True(DateTime.UtcNow < deadline, $"no validation-failure in {counts}");
            await Task.Delay(200);
        }
        Assert.Contains("\"policy-type\": \"sts\"", File.ReadAllText(counts));
        Assert.Contains("\"receiving-mx-hostname\": \"mx.ststest.test\"", File.ReadAllText(counts));
    }

    [Fact]
    public async Task The_policy_is_cached_across_a_restart_without_its_https_server()
    {
        await using var world = Start("stscache.test", Policy("enforce", "mx.stscache.test"));
        await using var relay = await StartRelayAsync(world);
        string first = await relay.SendAsync(Sender, ["rcpt@stscache.test"], MessageText.Simple("cache-1@test"));
        await relay.WaitForEventAsync(first, "delivered");
        Assert.Single(world.PolicyServer.Requests);

        // The policy host is gone, and the MX now points at a host the policy does not name.
        int port = world.PolicyServer.Port;
        await world.PolicyServer.DisposeAsync();
        world.Dns.Remove("stscache.test").Mx("stscache.test", (10, "mx.attacker.test")).A("mx.attacker.test", "127.0.0.2");
        await relay.RestartAsync(log);

        string second = await relay.SendAsync(Sender, ["rcpt@stscache.test"], MessageText.Simple("cache-2@test"));
        var deferred = await relay.WaitForEventAsync(second, "deferred");
        Assert.Contains("mx.attacker.test is not an MX host the policy of stscache.test names", (string?)deferred["reply"]);
        Assert.DoesNotContain(world.Peers[0].Messages, m => m.Header("Message-ID") == "<cache-2@test>");
        // Re-create a server object so the world can dispose it.
        world.PolicyServer = new TestHttpsServer(PolicyIp, world.Pki.Issue(["unused.test"]));
        _ = port;
    }

    [Fact]
    public async Task A_new_record_id_makes_the_relay_fetch_the_policy_again()
    {
        await using var world = Start("stsid.test", Policy("enforce", "mx.stsid.test"));
        world.Dns.Ttl("stsid.test", 1).Ttl("_mta-sts.stsid.test", 1).Ttl("mx.stsid.test", 1);
        await using var relay = await StartRelayAsync(world);
        string first = await relay.SendAsync(Sender, ["rcpt@stsid.test"], MessageText.Simple("id-1@test"));
        await relay.WaitForEventAsync(first, "delivered");
        Assert.Single(world.PolicyServer.Requests);

        // The new policy names another MX only; the record's id says it changed.
        world.PolicyServer.Body = Policy("enforce", "mx.new.test");
        world.Dns.Remove("_mta-sts.stsid.test").Txt("_mta-sts.stsid.test", "v=STSv1; id=2;").Ttl("_mta-sts.stsid.test", 1);
        // The route is cached for the records' 1 s TTL: ask until the relay sees the new id.
        JsonObject? deferred = null;
        for (int i = 0; i < 20 && deferred is null; i++)
        {
            await Task.Delay(1100);
            string next = await relay.SendAsync(Sender, ["rcpt@stsid.test"], MessageText.Simple($"id-2-{i}@test"));
            var outcome = await relay.WaitForEventAsync(e => (string?)e["id"] == next && (string?)e["event"] is "delivered" or "deferred", "an outcome");
            if ((string?)outcome["event"] == "deferred")
                deferred = outcome;
        }
        Assert.NotNull(deferred);
        Assert.Contains("not an MX host the policy of stsid.test names (mode enforce, id 2)", (string?)deferred!["reply"]);
        Assert.Equal(2, world.PolicyServer.Requests.Count);
    }

    [Fact]
    public async Task Dane_wins_over_mta_sts_where_both_exist()
    {
        await using var world = Start("both.test", Policy("enforce", "mx.nomatch.test"), dnssec: true);
        var certificate = TestPki.SelfSigned("anything.test");
        world.Peers[0].ServerCertificate = certificate;
        var r = NativeRelay.Tests.Unit.DaneTests.Record(3, 1, 1, certificate);
        world.Dns.Tlsa($"_{world.Peers.Port}._tcp.mx.both.test", (r.Usage, r.Selector, r.MatchingType, r.Data));
        await using var relay = await StartRelayAsync(world, null, "--dnssec");

        string id = await relay.SendAsync(Sender, ["rcpt@both.test"], MessageText.Simple("both@test"));

        await world.Peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<both@test>", "the message");
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("dane", (string?)delivered["tlsPolicy"]);
        Assert.Equal("dane", (string?)delivered["tlsVerified"]);
    }

    [Fact]
    public async Task No_mta_sts_turns_the_policies_off()
    {
        await using var world = Start("off.test", Policy("enforce", "mx.elsewhere.test"));
        await using var relay = await StartRelayAsync(world, null, "--no-mta-sts");

        string id = await relay.SendAsync(Sender, ["rcpt@off.test"], MessageText.Simple("off@test"));

        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("opportunistic", (string?)delivered["tlsPolicy"]);
        Assert.Empty(world.PolicyServer.Requests);
    }

    [Fact]
    public async Task A_policy_host_that_redirects_is_no_policy_and_the_relay_lives_on()
    {
        await using var world = Start("redirect.test", Policy("enforce", "mx.elsewhere.test"));
        world.PolicyServer.Status = 302;
        world.PolicyServer.ExtraHeaders["Location"] = "https://evil.test/policy";
        await using var relay = await StartRelayAsync(world);

        string id = await relay.SendAsync(Sender, ["rcpt@redirect.test"], MessageText.Simple("redirect@test"));

        // RFC 8461 3.3: no policy could be fetched and none is cached: deliver as without MTA-STS.
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("opportunistic", (string?)delivered["tlsPolicy"]);
        Assert.Single(world.PolicyServer.Requests);
    }

    [Fact]
    public async Task Tls_required_no_delivers_past_a_policy_that_refuses_the_mx()
    {
        await using var world = Start("tlsno.test", Policy("enforce", "mx.elsewhere.test"));
        await using var relay = await StartRelayAsync(world, null, "--tls-policy", "verify");

        byte[] optional = MessageText.Build("From: a@origin.test", "To: rcpt@tlsno.test", "Subject: x", "Message-ID: <tlsno@test>",
            "TLS-Required: No", "", "body");
        string id = await relay.SendAsync(Sender, ["rcpt@tlsno.test"], optional);
        string strict = await relay.SendAsync(Sender, ["rcpt@tlsno.test"], MessageText.Simple("tlsstrict@test"));

        await world.Peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<tlsno@test>", "the TLS-Required: No message");
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("opportunistic", (string?)delivered["tlsPolicy"]);
        var deferred = await relay.WaitForEventAsync(strict, "deferred");
        Assert.Contains("MTA-STS", (string?)deferred["reply"]);
        Assert.DoesNotContain(world.Peers[0].Messages, m => m.Header("Message-ID") == "<tlsstrict@test>");
    }
}
