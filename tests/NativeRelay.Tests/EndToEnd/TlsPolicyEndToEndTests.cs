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
}
