using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// REQUIRETLS (RFC 8689): offered only under TLS, the MAIL parameter refused in plain text and
/// kept with the message, and on delivery honoured: sent (with the parameter) only over verified
/// TLS to a next hop that offers REQUIRETLS; refused and bounced (5.7.10 / 5.7.30) otherwise.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class RequireTlsEndToEndTests(ITestOutputHelper log)
{
    private const string Sender = "sender@origin.test";

    /// <summary>With <paramref name="dnssec"/> the relay trusts the AD bit of the tests' DNS, so MX answers count as validated (RFC 8689 4.2.1).</summary>
    private static async Task<MxRelay> StartRelayAsync(ITestOutputHelper log, TestDnsServer dns, PeerGroup peers, TestPki pki, TempDir dir,
        bool dnssec = true, int? mtaStsPort = null) =>
        await MxRelay.StartAsync(log, dns, peers.Port, config =>
        {
            var cert = TestCertificate.Create(dir.Path);
            config["tls"] = new JsonObject { ["certificate"] = cert.CertificatePath, ["key"] = cert.KeyPath };
            config["outboundTls"] = new JsonObject { ["caFile"] = pki.WriteRoot(dir.Path) };
            if (mtaStsPort is not null)
                config["outboundTls"]!["mtaStsPort"] = mtaStsPort.Value;
        }, extraFlags: dnssec ? ["--dnssec"] : []);

    private static async Task<string> SendRequireTlsAsync(MxRelay relay, string rcpt, string messageId)
    {
        await using var client = await SecureSmtpClient.ConnectEhloAsync(relay.Port);
        await client.StartTlsAsync();
        var ehlo = await client.ExpectAsync("EHLO client.test", 250);
        Assert.Contains(ehlo.Lines, l => l.Contains("REQUIRETLS", StringComparison.Ordinal));
        var queued = await client.SendMessageAsync(Sender, [rcpt], MessageText.Simple(messageId), "REQUIRETLS");
        Assert.Equal(250, queued.Code);
        return queued.FirstLine.Split(' ')[^1];
    }

    [Fact]
    public async Task Requiretls_is_offered_only_under_tls_and_refused_in_plain_text()
    {
        using var pki = new TestPki();
        using var dir = new TempDir("nativerelay-requiretls");
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        await using var relay = await StartRelayAsync(log, dns, peers, pki, dir);

        await using var client = await SecureSmtpClient.ConnectAsync(relay.Port);
        await client.ExpectGreetingAsync();
        var plainEhlo = await client.ExpectAsync("EHLO client.test", 250);
        Assert.DoesNotContain(plainEhlo.Lines, l => l.Contains("REQUIRETLS", StringComparison.Ordinal));
        var refused = await client.CommandAsync($"MAIL FROM:<{Sender}> REQUIRETLS");
        Assert.Equal(530, refused.Code);
        Assert.Equal("5.7.10", refused.EnhancedCode);
        await client.StartTlsAsync();
        var ehlo = await client.ExpectAsync("EHLO client.test", 250);
        Assert.Contains(ehlo.Lines, l => l.Contains("REQUIRETLS", StringComparison.Ordinal));
        Assert.Equal(501, (await client.CommandAsync($"MAIL FROM:<{Sender}> REQUIRETLS=YES")).Code);
        Assert.Equal(250, (await client.CommandAsync($"MAIL FROM:<{Sender}> REQUIRETLS")).Code);
    }

    [Fact]
    public async Task A_requiretls_message_is_delivered_over_verified_tls_with_the_parameter()
    {
        using var pki = new TestPki();
        using var dir = new TempDir("nativerelay-requiretls");
        await using var dns = new TestDnsServer { Dnssec = true };
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        peers[0].RequireTls = true;
        peers[0].ServerCertificate = pki.Issue(["mx.rt.test"]);
        dns.Mx("rt.test", (10, "mx.rt.test")).A("mx.rt.test", "127.0.0.2");
        await using var relay = await StartRelayAsync(log, dns, peers, pki, dir);

        string id = await SendRequireTlsAsync(relay, "rcpt@rt.test", "rt-ok@test");

        var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<rt-ok@test>", "the message");
        Assert.True(got.Tls);
        Assert.Contains(peers[0].MailParameters, p => p.Contains("REQUIRETLS", StringComparison.Ordinal));
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("ca", (string?)delivered["tlsVerified"]);
    }

    [Theory]
    [InlineData("plain", "5.7.10")]
    [InlineData("unverified", "5.7.10")]
    [InlineData("no-requiretls", "5.7.30")]
    public async Task A_requiretls_message_is_refused_and_bounced_over_a_plain_or_unverified_next_hop(string hop, string status)
    {
        using var pki = new TestPki();
        using var dir = new TempDir("nativerelay-requiretls");
        await using var dns = new TestDnsServer { Dnssec = true };
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = hop != "plain";
        peers[0].RequireTls = hop != "no-requiretls";
        peers[0].ServerCertificate = hop == "unverified" ? TestPki.SelfSigned("mx.rtbad.test") : pki.Issue(["mx.rtbad.test"]);
        dns.Mx("rtbad.test", (10, "mx.rtbad.test")).A("mx.rtbad.test", "127.0.0.2");
        await using var relay = await StartRelayAsync(log, dns, peers, pki, dir);

        string id = await SendRequireTlsAsync(relay, "rcpt@rtbad.test", $"rt-{hop}@test");

        var failed = await relay.WaitForEventAsync(id, "failed");
        Assert.StartsWith($"550 {status}", (string?)failed["reply"]);
        await relay.WaitForEventAsync(id, "bounce");
        Assert.Equal(0, peers[0].RcptAttempts("rcpt@rtbad.test"));
        Assert.DoesNotContain(peers[0].Messages, m => m.Header("Message-ID") == $"<rt-{hop}@test>");
    }

    [Fact]
    public async Task A_requiretls_message_is_not_sent_to_an_mx_from_an_unvalidated_answer_even_over_verified_tls()
    {
        using var pki = new TestPki();
        using var dir = new TempDir("nativerelay-requiretls");
        await using var dns = new TestDnsServer(); // no AD bit: the MX answer could be forged (RFC 8689 4.2.1)
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        peers[0].RequireTls = true;
        peers[0].ServerCertificate = pki.Issue(["mx.rtmx.test"]);
        dns.Mx("rtmx.test", (10, "mx.rtmx.test")).A("mx.rtmx.test", "127.0.0.2");
        await using var relay = await StartRelayAsync(log, dns, peers, pki, dir, dnssec: false);

        string id = await SendRequireTlsAsync(relay, "rcpt@rtmx.test", "rt-mx@test");

        var failed = await relay.WaitForEventAsync(id, "failed");
        Assert.StartsWith("550 5.7.10", (string?)failed["reply"]);
        Assert.Contains("not DNSSEC-validated", (string?)failed["reply"]);
        await relay.WaitForEventAsync(id, "bounce");
        Assert.DoesNotContain(peers[0].Messages, m => m.Header("Message-ID") == "<rt-mx@test>");
    }

    [Fact]
    public async Task An_mta_sts_policy_in_enforce_vouches_for_the_mx_of_a_requiretls_message()
    {
        using var pki = new TestPki();
        using var dir = new TempDir("nativerelay-requiretls");
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        peers[0].RequireTls = true;
        peers[0].ServerCertificate = pki.Issue(["mx.rtsts.test"]);
        await using var policy = new TestHttpsServer("127.0.0.5", pki.Issue(["mta-sts.rtsts.test"]))
        {
            Body = "version: STSv1\r\nmode: enforce\r\nmx: mx.rtsts.test\r\nmax_age: 86400\r\n",
        };
        dns.Mx("rtsts.test", (10, "mx.rtsts.test")).A("mx.rtsts.test", "127.0.0.2")
           .Txt("_mta-sts.rtsts.test", "v=STSv1; id=1").A("mta-sts.rtsts.test", "127.0.0.5");
        await using var relay = await StartRelayAsync(log, dns, peers, pki, dir, dnssec: false, mtaStsPort: policy.Port);

        string id = await SendRequireTlsAsync(relay, "rcpt@rtsts.test", "rt-sts@test");

        await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<rt-sts@test>", "the message");
        var delivered = await relay.WaitForEventAsync(id, "delivered");
        Assert.Equal("mta-sts", (string?)delivered["tlsVerified"]);
    }
}
