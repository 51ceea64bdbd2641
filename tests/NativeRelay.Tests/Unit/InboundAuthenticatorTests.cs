using System.Buffers;
using System.Net;
using System.Text;
using NativeRelay.Config;
using NativeRelay.MailAuth;
using NativeRelay.MailAuth.Dmarc;
using NativeRelay.MailAuth.Spf;
using NativeRelay.Routing;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// The inbound stage as the session will call it: SPF at MAIL, then DKIM, DMARC, the
/// Authentication-Results header, forged-header removal and the decision at the end of data,
/// with records served by the tests' DNS responder.
/// </summary>
public sealed class InboundAuthenticatorTests : IDisposable
{
    private static readonly IPAddress Client = IPAddress.Parse("192.0.2.10");
    private readonly TestDnsServer _dns = new();

    public InboundAuthenticatorTests()
    {
        _dns.Txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all exp=why.example.com")
            .Txt("why.example.com", "%{i} may not send for %{d}");
    }

    public void Dispose() => _dns.Dispose();

    private sealed class FixedDkim(params DkimVerdict[] verdicts) : IDkimVerifier
    {
        public int Calls;
        public Task<IReadOnlyList<DkimVerdict>> VerifyAsync(ReadOnlyMemory<byte> message, CancellationToken cancel)
        {
            Calls++;
            return Task.FromResult<IReadOnlyList<DkimVerdict>>(verdicts);
        }
    }

    private sealed class NeverDkim : IDkimVerifier
    {
        public Task<IReadOnlyList<DkimVerdict>> VerifyAsync(ReadOnlyMemory<byte> message, CancellationToken cancel) =>
            Task.Delay(Timeout.Infinite, cancel).ContinueWith<IReadOnlyList<DkimVerdict>>(_ => throw new OperationCanceledException(cancel), TaskScheduler.Default);
    }

    private InboundAuthenticator Authenticator(IDkimVerifier? dkim = null, string json = "{}")
    {
        var options = System.Text.Json.JsonSerializer.Deserialize("{ \"inboundAuth\": " + json + " }", RelayOptionsJsonContext.Default.RelayOptions)!;
        options.Hostname = "mx.relay.test";
        var settings = InboundAuthSettings.Validate(options, "mx.relay.test");
        return new InboundAuthenticator(settings, new DnsClientResolver([_dns.EndPoint], TimeSpan.FromSeconds(2)), dkim, "mx.relay.test", () => 0);
    }

    private static ReadOnlyMemory<byte> Message(string from, string extraHeaders = "") =>
        Encoding.UTF8.GetBytes($"{extraHeaders}From: Someone <{from}>\r\nTo: rcpt@relay.test\r\nSubject: test\r\n\r\nHello\r\n");

    [Fact]
    public async Task Annotate_passes_and_reports_all_three_methods()
    {
        _dns.Txt("_dmarc.example.com", "v=DMARC1; p=reject");
        var dkim = new FixedDkim(new DkimVerdict(DkimResult.Pass, "example.com", "s1", "rsa-sha256", null, "abcdefgh"));
        var auth = Authenticator(dkim);
        var spf = await auth.CheckSpfAsync(Client, "bounce@example.com", "client.example.com", CancellationToken.None);
        Assert.Equal(SpfResult.Pass, spf.Result);
        Assert.Equal(InboundAction.Accept, auth.DecideAtMail(InboundAuthMode.Annotate, spf).Action);

        var result = await auth.CheckMessageAsync(InboundAuthMode.Annotate, Client, "client.example.com", "bounce@example.com", spf, Message("joe@example.com"), CancellationToken.None);

        Assert.Same(spf, result.Spf);
        Assert.Equal((DmarcResult.Pass, true, true), (result.Dmarc.Result, result.Dmarc.SpfAligned, result.Dmarc.DkimAligned));
        Assert.Equal(InboundAction.Accept, result.Decision.Action);
        Assert.Empty(result.ForgedHeaders);
        string header = Encoding.UTF8.GetString(result.Header).Replace("\r\n\t", " ");
        Assert.Equal("Authentication-Results: mx.relay.test; spf=pass (matched ip4:192.0.2.0/24) smtp.mailfrom=bounce@example.com; " +
                     "dkim=pass header.d=example.com header.s=s1 header.a=rsa-sha256 header.b=abcdefgh; " +
                     "dmarc=pass (p=reject dis=none) header.from=example.com\r\n", header);
        Assert.Equal(1, dkim.Calls);
    }

    [Theory]
    [InlineData(InboundAuthMode.Enforce, "reject", InboundAction.Reject)]
    [InlineData(InboundAuthMode.Enforce, "quarantine", InboundAction.Quarantine)]
    [InlineData(InboundAuthMode.Enforce, "annotate", InboundAction.Accept)]
    [InlineData(InboundAuthMode.Annotate, "reject", InboundAction.Accept)]
    public async Task A_dmarc_reject_failure_is_refused_only_under_enforce(InboundAuthMode mode, string action, InboundAction expected)
    {
        _dns.Txt("_dmarc.bank.example", "v=DMARC1; p=reject");
        var auth = Authenticator(null, $"{{ \"dmarcRejectAction\": \"{action}\" }}");

        var result = await auth.CheckMessageAsync(mode, Client, "client.example.com", "bounce@example.com", null, Message("ceo@bank.example"), CancellationToken.None);

        Assert.Equal(SpfResult.Pass, result.Spf.Result); // SPF passes for example.com, but it is not aligned with bank.example
        Assert.Equal((DmarcResult.Fail, DmarcPolicy.Reject), (result.Dmarc.Result, result.Dmarc.Disposition));
        Assert.Equal(expected, result.Decision.Action);
        if (expected == InboundAction.Reject)
            Assert.Equal("550 5.7.1 Message refused by the DMARC policy of bank.example: it is not authenticated as bank.example", result.Decision.Reply);
        Assert.Contains("dmarc=fail (p=reject dis=reject) header.from=bank.example", Encoding.UTF8.GetString(result.Header).Replace("\r\n\t", " "));
    }

    [Fact]
    public async Task Quarantine_and_none_policies_are_never_refused()
    {
        _dns.Txt("_dmarc.q.example", "v=DMARC1; p=quarantine").Txt("_dmarc.n.example", "v=DMARC1; p=none");
        var auth = Authenticator();
        var q = await auth.CheckMessageAsync(InboundAuthMode.Enforce, Client, "h.example.com", "a@example.com", null, Message("x@q.example"), CancellationToken.None);
        Assert.Equal(InboundAction.Quarantine, q.Decision.Action);
        var n = await auth.CheckMessageAsync(InboundAuthMode.Enforce, Client, "h.example.com", "a@example.com", null, Message("x@n.example"), CancellationToken.None);
        Assert.Equal((DmarcResult.Fail, InboundAction.Accept), (n.Dmarc.Result, n.Decision.Action));
    }

    [Fact]
    public async Task Temporary_dns_failures_never_refuse()
    {
        _dns.ServFail("_dmarc.bank.example").ServFail("broken.example");
        var auth = Authenticator(null, "{ \"spfRejectFailAtMail\": true }");
        var spf = await auth.CheckSpfAsync(Client, "a@broken.example", "h.example.com", CancellationToken.None);
        Assert.Equal(SpfResult.TempError, spf.Result);
        Assert.Equal(InboundAction.Accept, auth.DecideAtMail(InboundAuthMode.Enforce, spf).Action);

        var result = await auth.CheckMessageAsync(InboundAuthMode.Enforce, Client, "h.example.com", "a@broken.example", spf, Message("ceo@bank.example"), CancellationToken.None);

        Assert.Equal(DmarcResult.TempError, result.Dmarc.Result);
        Assert.Equal(InboundAction.Accept, result.Decision.Action);
        string header = Encoding.UTF8.GetString(result.Header).Replace("\r\n\t", " ").Replace("\r\n ", " ");
        Assert.Contains("spf=temperror reason=", header);
        Assert.Contains("dmarc=temperror reason=\"DNS failure looking up _dmarc.bank.example (SERVFAIL)\" header.from=bank.example", header);
    }

    [Fact]
    public async Task Spf_fail_is_refused_at_mail_only_when_the_operator_asks()
    {
        var client = IPAddress.Parse("198.51.100.9");
        var asked = Authenticator(null, "{ \"spfRejectFailAtMail\": true }");
        var spf = await asked.CheckSpfAsync(client, "a@example.com", "h.example.net", CancellationToken.None);
        Assert.Equal(SpfResult.Fail, spf.Result);
        var decision = asked.DecideAtMail(InboundAuthMode.Enforce, spf);
        Assert.Equal(InboundAction.Reject, decision.Action);
        Assert.Equal("550 5.7.1 198.51.100.9 may not send for example.com", decision.Reply);
        Assert.Equal(InboundAction.Accept, asked.DecideAtMail(InboundAuthMode.Annotate, spf).Action);
        Assert.Equal(InboundAction.Accept, Authenticator().DecideAtMail(InboundAuthMode.Enforce, spf).Action);
    }

    [Fact]
    public async Task A_forged_header_with_our_id_never_survives()
    {
        _dns.Txt("_dmarc.example.com", "v=DMARC1; p=none");
        var auth = Authenticator();
        var message = Message("joe@example.com",
            "Authentication-Results: MX.RELAY.TEST; dmarc=pass header.from=example.com\r\n" +
            "Authentication-Results: upstream.example.net; spf=pass smtp.mailfrom=joe@example.com\r\n" +
            "Authentication-Results: (x) mx.relay.test;\r\n\tdkim=pass header.d=example.com\r\n");

        var result = await auth.CheckMessageAsync(InboundAuthMode.Annotate, Client, "h.example.com", "a@example.com", null, message, CancellationToken.None);

        Assert.Equal(2, result.ForgedHeaders.Count);
        var output = new ArrayBufferWriter<byte>();
        output.Write(result.Header);
        AuthenticationResults.CopyWithout(message.Span, result.ForgedHeaders, output);
        var final = output.WrittenMemory.ToArray();
        var ours = AuthenticationResults.FindOurs(final, "mx.relay.test");
        Assert.Single(ours);
        Assert.Equal(0, ours[0].Start.Value); // the one left is the one we added on top
        Assert.Contains("Authentication-Results: upstream.example.net;", Encoding.UTF8.GetString(final));
    }

    [Fact]
    public async Task Messages_without_one_From_are_refused_under_enforce()
    {
        var auth = Authenticator();
        var twoFroms = Encoding.UTF8.GetBytes("From: a@example.com\r\nFrom: b@bank.example\r\nSubject: x\r\n\r\nbody\r\n");
        var result = await auth.CheckMessageAsync(InboundAuthMode.Enforce, Client, "h.example.com", "a@example.com", null, twoFroms, CancellationToken.None);
        Assert.Equal(DmarcResult.PermError, result.Dmarc.Result);
        Assert.Equal(InboundAction.Reject, result.Decision.Action);
        Assert.Equal("550 5.7.1 Message refused: DMARC needs exactly one From address (2 From fields)", result.Decision.Reply);
        var annotated = await auth.CheckMessageAsync(InboundAuthMode.Annotate, Client, "h.example.com", "a@example.com", null, twoFroms, CancellationToken.None);
        Assert.Equal(InboundAction.Accept, annotated.Decision.Action);
    }

    [Fact]
    public async Task Dkim_verdicts_are_capped_and_a_stuck_verifier_is_a_temperror()
    {
        _dns.Txt("_dmarc.example.com", "v=DMARC1; p=reject");
        var many = Enumerable.Range(0, 8).Select(i => new DkimVerdict(DkimResult.Fail, $"d{i}.example.net", "s", "rsa-sha256", "bad", "x")).ToArray();
        var capped = await Authenticator(new FixedDkim(many), "{ \"maxDkimSignatures\": 2 }")
            .CheckMessageAsync(InboundAuthMode.Annotate, Client, "h", "a@example.com", null, Message("joe@example.com"), CancellationToken.None);
        Assert.Equal(2, capped.Dkim!.Count);

        var stuck = await Authenticator(new NeverDkim(), "{ \"timeoutSeconds\": 1 }")
            .CheckMessageAsync(InboundAuthMode.Enforce, Client, "h", "a@example.com", null, Message("joe@example.com"), CancellationToken.None);
        Assert.Equal(DkimResult.TempError, Assert.Single(stuck.Dkim!).Result);
        Assert.Equal((DmarcResult.Pass, InboundAction.Accept), (stuck.Dmarc.Result, stuck.Decision.Action)); // SPF still aligns
    }

    [Fact]
    public void Only_strangers_on_checking_listeners_are_checked()
    {
        Assert.True(InboundAuthenticator.AppliesTo(InboundAuthMode.Annotate, inRelayNetworks: false, authenticated: false));
        Assert.False(InboundAuthenticator.AppliesTo(InboundAuthMode.Off, false, false));
        Assert.False(InboundAuthenticator.AppliesTo(InboundAuthMode.Enforce, inRelayNetworks: true, authenticated: false));
        Assert.False(InboundAuthenticator.AppliesTo(InboundAuthMode.Enforce, inRelayNetworks: false, authenticated: true));
    }
}
