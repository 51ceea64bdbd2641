using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// The TLS policies of delivery against real next hops on loopback: the verify policy with a
/// private CA (good, expired, self-signed, wrong-name and foreign-CA certificates) and the
/// downgrade attempts (STARTTLS stripped, 454 to STARTTLS). A failure to verify is a failure
/// to deliver: next MX, then defer, never plain text.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class TlsPolicyEndToEndTests(ITestOutputHelper log)
{
    private const string Sender = "sender@origin.test";

    [Fact]
    public async Task Verify_delivers_over_a_certificate_from_the_ca_bundle_that_names_the_mx()
    {
        using var pki = new TestPki();
        using var dir = new TempDir("nativerelay-pki");
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        peers[0].ServerCertificate = pki.Issue(["*.good.test"]);
        dns.Mx("good.test", (10, "mx.good.test")).A("mx.good.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port,
            extraFlags: ["--tls-policy", "verify", "--ca-file", pki.WriteRoot(dir.Path)]);

        string id = await relay.SendAsync(Sender, ["rcpt@good.test"], MessageText.Simple("verified@test"));

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<verified@test>", "the message");
        Assert.True(got.Tls);
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.StartsWith("TLSv1.", (string?)delivered["tls"]);
        Assert.EndsWith(" verified", (string?)delivered["tls"]);
    }

    public static TheoryData<string, string> BadCertificates => new()
    {
        { "wrong-name", "certificate does not name the host mx.bad.test" },
        { "expired", "certificate expired or not yet valid mx.bad.test" },
        { "self-signed", "untrusted certificate chain mx.bad.test" },
        { "foreign-ca", "untrusted certificate chain mx.bad.test" },
    };

    [Theory]
    [MemberData(nameof(BadCertificates))]
    public async Task Verify_defers_and_never_sends_over_a_certificate_it_cannot_verify(string kind, string reason)
    {
        using var pki = new TestPki();
        using var foreign = new TestPki("Foreign CA");
        using var dir = new TempDir("nativerelay-pki");
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        peers[0].ServerCertificate = kind switch
        {
            "wrong-name" => pki.Issue(["mx.elsewhere.test"]),
            "expired" => pki.Issue(["mx.bad.test"], DateTimeOffset.UtcNow.AddDays(-20), DateTimeOffset.UtcNow.AddDays(-1)),
            "self-signed" => TestPki.SelfSigned("mx.bad.test"),
            _ => foreign.Issue(["mx.bad.test"]),
        };
        dns.Mx("bad.test", (10, "mx.bad.test")).A("mx.bad.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
        {
            config["outboundTls"] = new JsonObject { ["caFile"] = pki.WriteRoot(dir.Path) };
            config["routing"]!["routes"] = new JsonObject { ["bad.test"] = new JsonObject { ["tls"] = "verify" } };
        });

        string id = await relay.SendAsync(Sender, ["rcpt@bad.test"], MessageText.Simple($"{kind}@test"));

        var deferred = await relay.WaitForEventAsync(id, "deferred");
        Assert.Contains("4.7.5", (string?)deferred["reply"]);
        Assert.Contains(reason, (string?)deferred["reply"]);
        Assert.Empty(peers[0].Messages);
        Assert.Equal(0, peers[0].DataAttemptCount);
        Assert.Equal(0, peers[0].RcptAttempts("rcpt@bad.test"));
    }

    [Theory]
    [InlineData("stripped")]
    [InlineData("454")]
    public async Task Verify_defers_when_starttls_is_stripped_or_refused(string attack)
    {
        using var pki = new TestPki();
        using var dir = new TempDir("nativerelay-pki");
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = attack == "454";
        peers[0].RefuseStartTls = attack == "454";
        peers[0].ServerCertificate = pki.Issue(["mx.strip.test"]);
        dns.Mx("strip.test", (10, "mx.strip.test")).A("mx.strip.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port,
            extraFlags: ["--tls-policy", "verify", "--ca-file", pki.WriteRoot(dir.Path)]);

        string id = await relay.SendAsync(Sender, ["rcpt@strip.test"], MessageText.Simple($"strip-{attack}@test"));

        var deferred = await relay.WaitForEventAsync(id, "deferred");
        Assert.Contains("4.7.4 TLS is required", (string?)deferred["reply"]);
        Assert.Empty(peers[0].Messages);
        Assert.Equal(0, peers[0].RcptAttempts("rcpt@strip.test"));
    }

    [Fact]
    public async Task Verify_moves_on_to_the_next_mx_when_the_first_certificate_fails()
    {
        using var pki = new TestPki();
        using var dir = new TempDir("nativerelay-pki");
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.3");
        peers[0].StartTls = true;
        peers[0].ServerCertificate = pki.Issue(["mx1.wrong.test"]);
        peers[1].StartTls = true;
        peers[1].ServerCertificate = pki.Issue(["mx2.two.test"]);
        dns.Mx("two.test", (10, "mx1.two.test"), (20, "mx2.two.test"))
           .A("mx1.two.test", "127.0.0.2").A("mx2.two.test", "127.0.0.3");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port,
            extraFlags: ["--tls-policy", "verify", "--ca-file", pki.WriteRoot(dir.Path)]);

        string id = await relay.SendAsync(Sender, ["rcpt@two.test"], MessageText.Simple("two@test"));

        var got = await peers[1].WaitForMessageAsync(m => m.Header("Message-ID") == "<two@test>", "the message at the second MX");
        Assert.True(got.Tls);
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal(1, (int?)delivered["attempt"]);
        Assert.Empty(peers[0].Messages);
        Assert.Equal(0, peers[0].RcptAttempts("rcpt@two.test"));
    }

    [Fact]
    public async Task The_opportunistic_default_still_delivers_over_an_unverified_certificate_and_says_so()
    {
        using var pki = new TestPki();
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        peers[0].ServerCertificate = pki.Issue(["mx.elsewhere.test"]);
        dns.Mx("may.test", (10, "mx.may.test")).A("mx.may.test", "127.0.0.2");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["rcpt@may.test"], MessageText.Simple("may@test"));

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<may@test>", "the message");
        Assert.True(got.Tls);
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.EndsWith("unverified", (string?)delivered["tls"]);
    }

    // DANE ---------------------------------------------------------------------------------------

    private static (byte, byte, byte, byte[]) Tlsa(byte usage, byte selector, byte matching, System.Security.Cryptography.X509Certificates.X509Certificate2 certificate)
    {
        var r = NativeRelay.Tests.Unit.DaneTests.Record(usage, selector, matching, certificate);
        return (r.Usage, r.Selector, r.MatchingType, r.Data);
    }

    [Fact]
    public async Task Dane_ee_delivers_to_a_self_signed_peer_whose_key_matches_the_validated_tlsa_record()
    {
        await using var dns = new TestDnsServer { Dnssec = true };
        await using var peers = PeerGroup.Start("127.0.0.2");
        var certificate = TestPki.SelfSigned("anything.else.test");
        peers[0].StartTls = true;
        peers[0].ServerCertificate = certificate;
        dns.Mx("dane.test", (10, "mx.dane.test")).A("mx.dane.test", "127.0.0.2")
           .Tlsa($"_{peers.Port}._tcp.mx.dane.test", Tlsa(3, 1, 1, certificate), (0, 0, 1, new byte[32]));
        int metricsPort = FreePort.Get();
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, extraFlags: ["--dnssec", "--metrics", $"127.0.0.1:{metricsPort}"]);

        string id = await relay.SendAsync(Sender, ["rcpt@dane.test"], MessageText.Simple("dane@test"));

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<dane@test>", "the message");
        Assert.True(got.Tls);
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("dane", (string?)delivered["tlsPolicy"]);
        Assert.Equal("dane", (string?)delivered["tlsVerified"]);
        Assert.Equal(1, dns.Queries($"_{peers.Port}._tcp.mx.dane.test", "TLSA"));
        using var http = new HttpClient();
        string metrics = await http.GetStringAsync($"http://127.0.0.1:{metricsPort}/metrics");
        Assert.Contains("nativerelay_tls_connections_total{verified=\"dane\"} 1", metrics);
    }

    [Fact]
    public async Task Dane_ta_delivers_over_a_chain_the_peer_presents_with_the_published_anchor()
    {
        using var pki = new TestPki();
        await using var dns = new TestDnsServer { Dnssec = true };
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        // The issuing CA is the published trust anchor; the peer sends it after its own certificate.
        using var issuing = pki.Intermediate();
        peers[0].ServerCertificate = pki.Issue(["mx.daneta.test"], issuer: issuing);
        peers[0].ServerChain = [issuing];
        dns.Mx("daneta.test", (10, "mx.daneta.test")).A("mx.daneta.test", "127.0.0.2")
           .Tlsa($"_{peers.Port}._tcp.mx.daneta.test", Tlsa(2, 1, 1, issuing));
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, extraFlags: ["--dnssec"]);

        string id = await relay.SendAsync(Sender, ["rcpt@daneta.test"], MessageText.Simple("daneta@test"));

        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("dane", (string?)delivered["tlsVerified"]);
    }

    [Theory]
    [InlineData("mismatch")]
    [InlineData("stripped")]
    [InlineData("454")]
    [InlineData("tlsa-servfail")]
    public async Task Dane_defers_on_a_mismatch_a_downgrade_or_a_failed_tlsa_lookup(string attack)
    {
        await using var dns = new TestDnsServer { Dnssec = true };
        await using var peers = PeerGroup.Start("127.0.0.2");
        var published = TestPki.SelfSigned("mx.danebad.test");
        peers[0].StartTls = attack != "stripped";
        peers[0].RefuseStartTls = attack == "454";
        peers[0].ServerCertificate = attack == "mismatch" ? TestPki.SelfSigned("mx.danebad.test") : published;
        string tlsaName = $"_{peers.Port}._tcp.mx.danebad.test";
        dns.Mx("danebad.test", (10, "mx.danebad.test")).A("mx.danebad.test", "127.0.0.2").Tlsa(tlsaName, Tlsa(3, 1, 1, published));
        if (attack == "tlsa-servfail")
            dns.ServFail(tlsaName);
        int metricsPort = FreePort.Get();
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, extraFlags: ["--dnssec", "--metrics", $"127.0.0.1:{metricsPort}"]);

        string id = await relay.SendAsync(Sender, ["rcpt@danebad.test"], MessageText.Simple($"danebad-{attack}@test"));

        var deferred = await relay.WaitForEventAsync(id, "deferred");
        string reply = (string?)deferred["reply"] ?? "";
        string expected = attack switch
        {
            "mismatch" => "validation-failure",
            "tlsa-servfail" => "dnssec-invalid",
            _ => "starttls-not-supported",
        };
        Assert.Equal(expected, (string?)deferred["tlsFailure"]);
        Assert.Equal("dane", (string?)deferred["tlsPolicy"]);
        Assert.Contains(attack == "mismatch" ? "no TLSA record matches" : attack == "tlsa-servfail" ? "TLSA lookup" : "4.7.4", reply);
        Assert.Empty(peers[0].Messages);
        Assert.Equal(0, peers[0].RcptAttempts("rcpt@danebad.test"));
        if (attack == "tlsa-servfail")
            Assert.Equal(0, peers[0].ConnectionCount);
        using var http = new HttpClient();
        string metrics = await http.GetStringAsync($"http://127.0.0.1:{metricsPort}/metrics");
        Assert.Matches($"nativerelay_tls_policy_failures_total\\{{reason=\"{expected}\"\\}} [1-9]", metrics);
    }

    [Theory]
    [InlineData("no-ad-bit")]
    [InlineData("no-dnssec-flag")]
    [InlineData("no-dane-flag")]
    public async Task Without_validated_records_or_with_dane_off_the_configured_policy_applies(string variant)
    {
        await using var dns = new TestDnsServer { Dnssec = variant != "no-ad-bit" };
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        peers[0].ServerCertificate = TestPki.SelfSigned("mx.insecure.test");
        // A TLSA record that would not match: only DANE would refuse this peer.
        dns.Mx("insecure.test", (10, "mx.insecure.test")).A("mx.insecure.test", "127.0.0.2")
           .Tlsa($"_{peers.Port}._tcp.mx.insecure.test", (3, 1, 1, new byte[32]));
        string[] flags = variant switch { "no-dnssec-flag" => [], "no-dane-flag" => ["--dnssec", "--no-dane"], _ => ["--dnssec"] };
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, extraFlags: flags);

        string id = await relay.SendAsync(Sender, ["rcpt@insecure.test"], MessageText.Simple($"insecure-{variant}@test"));

        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("opportunistic", (string?)delivered["tlsPolicy"]);
        Assert.Equal("encrypted", (string?)delivered["tlsVerified"]);
    }
}
