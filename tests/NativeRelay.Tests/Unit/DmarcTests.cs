using System.Text;
using NativeRelay.MailAuth;
using NativeRelay.MailAuth.Dmarc;
using NativeRelay.MailAuth.Spf;
using NativeRelay.Routing;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>DMARC (RFC 7489): records, discovery, alignment, policies and pct, against the tests' DNS responder.</summary>
public sealed class DmarcTests : IDisposable
{
    private readonly TestDnsServer _dns = new();
    private int _sample;

    public void Dispose() => _dns.Dispose();

    private DmarcEvaluator Evaluator() => new(new DnsClientResolver([_dns.EndPoint], TimeSpan.FromSeconds(2)), PublicSuffixList.Default, () => _sample);

    private static SpfVerdict Spf(SpfResult result, string domain) => new(result, "mailfrom", domain, "bounce@" + domain);

    private static DkimVerdict Dkim(DkimResult result, string domain) => new(result, domain, "s1", "rsa-sha256", null, "abcdefgh");

    private Task<DmarcVerdict> Evaluate(string from, SpfVerdict? spf = null, params DkimVerdict[] dkim) =>
        Evaluator().EvaluateAsync(from, spf, dkim, CancellationToken.None);

    // ---- the record ----

    [Fact]
    public void Record_tags_are_read_with_their_defaults()
    {
        Assert.True(DmarcRecord.TryParse("v=DMARC1; p=quarantine; sp=reject; np=reject; adkim=s; aspf=s; pct=25; rua=mailto:agg@example.com,mailto:b@example.net; ruf=mailto:f@example.com; fo=1:d; ri=3600; future=x", out var r, out _));
        Assert.Equal((DmarcPolicy.Quarantine, DmarcPolicy.Reject, DmarcPolicy.Reject), (r.Policy, r.SubdomainPolicy, r.NonexistentPolicy));
        Assert.Equal((true, true, 25), (r.StrictDkim, r.StrictSpf, r.Percent));
        Assert.Equal(["mailto:agg@example.com", "mailto:b@example.net"], r.AggregateReportUris);
        Assert.Equal(["mailto:f@example.com"], r.FailureReportUris);
        Assert.Equal(("1:d", 3600), (r.FailureOptions, r.ReportInterval));

        Assert.True(DmarcRecord.TryParse("v = DMARC1 ;p=REJECT", out var d, out _));
        Assert.Equal((DmarcPolicy.Reject, (DmarcPolicy?)null, false, false, 100, "0"), (d.Policy, d.SubdomainPolicy, d.StrictDkim, d.StrictSpf, d.Percent, d.FailureOptions));
    }

    [Theory]
    [InlineData("p=reject; v=DMARC1")]       // v must come first
    [InlineData("v=DMARC2; p=reject")]
    [InlineData("v=dmarc1; p=reject")]       // DMARC1 is case-sensitive
    [InlineData("v=DMARC1")]                 // no p and no rua: discarded
    [InlineData("v=DMARC1; p=bogus")]
    [InlineData("v=DMARC1; p reject")]
    public void Invalid_records_are_discarded(string text)
    {
        Assert.False(DmarcRecord.TryParse(text, out _, out string? error));
        Assert.NotNull(error);
    }

    [Fact]
    public void A_bad_p_with_a_report_address_reads_as_p_none()
    {
        Assert.True(DmarcRecord.TryParse("v=DMARC1; p=bogus; rua=mailto:a@example.com", out var r, out _));
        Assert.Equal(DmarcPolicy.None, r.Policy);
    }

    // ---- discovery ----

    [Fact]
    public async Task No_record_anywhere_is_none()
    {
        var verdict = await Evaluate("mail.example.com", Spf(SpfResult.Fail, "example.com"));
        Assert.Equal(DmarcResult.None, verdict.Result);
        Assert.Equal(DmarcPolicy.None, verdict.Disposition);
        Assert.Equal(1, _dns.Queries("_dmarc.mail.example.com", "TXT"));
        Assert.Equal(1, _dns.Queries("_dmarc.example.com", "TXT"));
    }

    [Fact]
    public async Task The_organizational_domains_record_applies_to_subdomains_with_sp()
    {
        _dns.Txt("_dmarc.example.co.uk", "v=DMARC1; p=reject; sp=quarantine");
        var sub = await Evaluate("news.mail.example.co.uk", Spf(SpfResult.Fail, "example.co.uk"));
        Assert.Equal((DmarcResult.Fail, "example.co.uk", DmarcPolicy.Quarantine, DmarcPolicy.Quarantine), (sub.Result, sub.PolicyDomain, sub.Policy, sub.Disposition));
        Assert.Equal(0, _dns.Queries("_dmarc.mail.example.co.uk", "TXT")); // only the From domain and the organizational domain
        var org = await Evaluate("example.co.uk", Spf(SpfResult.Fail, "example.co.uk"));
        Assert.Equal((DmarcResult.Fail, DmarcPolicy.Reject), (org.Result, org.Disposition));
        Assert.Equal(0, _dns.Queries("_dmarc.co.uk", "TXT"));
    }

    [Fact]
    public async Task Without_sp_subdomains_get_p_and_a_subdomains_own_record_wins()
    {
        _dns.Txt("_dmarc.example.com", "v=DMARC1; p=reject")
            .Txt("_dmarc.lists.example.com", "v=DMARC1; p=none");
        Assert.Equal(DmarcPolicy.Reject, (await Evaluate("a.example.com")).Disposition);
        var own = await Evaluate("lists.example.com");
        Assert.Equal(("lists.example.com", DmarcPolicy.None), (own.PolicyDomain, own.Disposition));
    }

    [Fact]
    public async Task Np_applies_to_subdomains_that_do_not_exist()
    {
        _dns.Txt("_dmarc.example.com", "v=DMARC1; p=none; sp=quarantine; np=reject")
            .A("real.example.com", "192.0.2.1");
        Assert.Equal(DmarcPolicy.Reject, (await Evaluate("ghost.example.com")).Disposition);
        Assert.Equal(DmarcPolicy.Quarantine, (await Evaluate("real.example.com")).Disposition);
    }

    [Fact]
    public async Task Several_records_or_txt_that_is_not_dmarc_count_as_none()
    {
        _dns.Txt("_dmarc.example.com", "v=DMARC1; p=reject", "v=DMARC1; p=none")
            .Txt("_dmarc.example.net", "some verification token");
        var several = await Evaluate("example.com", Spf(SpfResult.Fail, "example.com"));
        Assert.Equal(DmarcResult.None, several.Result);
        Assert.Contains("more than one", several.Problem);
        Assert.Equal(DmarcResult.None, (await Evaluate("example.net")).Result);
    }

    [Theory]
    [InlineData("v=DMARC1; p=none", "v=DMARC1; p=quarantine")]
    [InlineData("v=DMARC1; p=bogus")]
    public async Task An_unusable_record_at_the_from_domain_ends_discovery_there(params string[] records)
    {
        _dns.Txt("_dmarc.sub.example.com", records).Txt("_dmarc.example.com", "v=DMARC1; p=reject");
        var verdict = await Evaluate("sub.example.com", Spf(SpfResult.Fail, "example.com"));
        Assert.Equal((DmarcResult.None, DmarcPolicy.None), (verdict.Result, verdict.Disposition));
        Assert.NotNull(verdict.Problem);
        Assert.Equal(0, _dns.Queries("_dmarc.example.com", "TXT"));
    }

    [Fact]
    public async Task A_dns_failure_is_a_temperror_and_never_a_disposition()
    {
        _dns.ServFail("_dmarc.example.com");
        var verdict = await Evaluate("example.com", Spf(SpfResult.Fail, "example.com"));
        Assert.Equal((DmarcResult.TempError, DmarcPolicy.None), (verdict.Result, verdict.Disposition));
        _dns.ServFail("_dmarc.example.com", false).ServFail("_dmarc.example.org");
        Assert.Equal(DmarcResult.TempError, (await Evaluate("sub.example.org")).Result);
    }

    // ---- alignment ----

    [Theory]
    // relaxed (default): same organizational domain
    [InlineData("r", "bounce.example.com", true)]
    [InlineData("r", "example.com", true)]
    [InlineData("r", "example.net", false)]
    [InlineData("r", "example.com.evil.test", false)]
    // strict: the same name
    [InlineData("s", "example.com", false)]
    [InlineData("s", "mail.example.com", true)]
    [InlineData("s", "MAIL.example.com.", true)]
    public async Task Spf_alignment(string mode, string spfDomain, bool aligned)
    {
        _dns.Txt("_dmarc.example.com", $"v=DMARC1; p=reject; aspf={mode}");
        var verdict = await Evaluate("mail.example.com", Spf(SpfResult.Pass, spfDomain));
        Assert.Equal(aligned, verdict.SpfAligned);
        Assert.Equal(aligned ? DmarcResult.Pass : DmarcResult.Fail, verdict.Result);
        Assert.Equal(aligned ? DmarcPolicy.None : DmarcPolicy.Reject, verdict.Disposition);
    }

    [Theory]
    [InlineData("r", "example.com", true)]
    [InlineData("r", "dkim.mail.example.com", true)]
    [InlineData("r", "co.uk", false)]
    [InlineData("s", "example.com", false)]
    [InlineData("s", "mail.example.com", true)]
    public async Task Dkim_alignment(string mode, string d, bool aligned)
    {
        _dns.Txt("_dmarc.example.com", $"v=DMARC1; p=quarantine; adkim={mode}");
        var verdict = await Evaluate("mail.example.com", null, Dkim(DkimResult.Pass, d));
        Assert.Equal(aligned, verdict.DkimAligned);
        Assert.Equal(aligned ? DmarcResult.Pass : DmarcResult.Fail, verdict.Result);
    }

    [Fact]
    public async Task Only_passing_results_align()
    {
        _dns.Txt("_dmarc.example.com", "v=DMARC1; p=reject");
        var verdict = await Evaluate("example.com", Spf(SpfResult.SoftFail, "example.com"),
            Dkim(DkimResult.Fail, "example.com"), Dkim(DkimResult.TempError, "example.com"), Dkim(DkimResult.Pass, "example.net"));
        Assert.Equal((DmarcResult.Fail, false, false), (verdict.Result, verdict.SpfAligned, verdict.DkimAligned));
        var second = await Evaluate("example.com", null, Dkim(DkimResult.Fail, "example.com"), Dkim(DkimResult.Pass, "example.com"));
        Assert.Equal((DmarcResult.Pass, true), (second.Result, second.DkimAligned));
    }

    // ---- policies and pct ----

    [Theory]
    [InlineData("none", DmarcPolicy.None)]
    [InlineData("quarantine", DmarcPolicy.Quarantine)]
    [InlineData("reject", DmarcPolicy.Reject)]
    public async Task Each_policy_is_the_disposition_of_a_failure(string p, DmarcPolicy expected)
    {
        _dns.Txt("_dmarc.example.com", $"v=DMARC1; p={p}");
        var verdict = await Evaluate("example.com", Spf(SpfResult.Fail, "example.com"));
        Assert.Equal((DmarcResult.Fail, expected, expected), (verdict.Result, verdict.Policy, verdict.Disposition));
    }

    [Theory]
    [InlineData("reject", 29, DmarcPolicy.Reject)]       // sampled: below pct
    [InlineData("reject", 30, DmarcPolicy.Quarantine)]   // not sampled: the next milder policy
    [InlineData("quarantine", 0, DmarcPolicy.Quarantine)]
    [InlineData("quarantine", 99, DmarcPolicy.None)]
    public async Task Pct_samples_failures_and_the_rest_get_the_next_milder_policy(string p, int sample, DmarcPolicy expected)
    {
        _sample = sample;
        _dns.Txt("_dmarc.example.com", $"v=DMARC1; p={p}; pct=30");
        var verdict = await Evaluate("example.com");
        Assert.Equal(expected, verdict.Disposition);
        Assert.Equal(p == "reject" ? DmarcPolicy.Reject : DmarcPolicy.Quarantine, verdict.Policy);
    }

    [Fact]
    public async Task Pct_zero_never_applies_the_policy()
    {
        _sample = 0;
        _dns.Txt("_dmarc.example.com", "v=DMARC1; p=reject; pct=0");
        Assert.Equal(DmarcPolicy.Quarantine, (await Evaluate("example.com")).Disposition);
    }

    // ---- the From field ----

    [Theory]
    [InlineData("From: Joe <joe@Example.COM>\r\n", "example.com")]
    [InlineData("From: joe@example.com\r\n", "example.com")]
    [InlineData("From: \"Doe, Joe <x@evil.test>\" <joe@example.com> (a comment, with @)\r\n", "example.com")]
    [InlineData("From: (comment) joe@sub.example.com.\r\n", "sub.example.com")]
    [InlineData("From: Joe\r\n <joe@example.com>\r\n", "example.com")]
    [InlineData("From: j@bücher.example\r\n", "xn--bcher-kva.example")]
    [InlineData("From: j@BÜCHER.Example\r\n", "xn--bcher-kva.example")]
    public void From_domain_is_found(string header, string domain)
    {
        var found = FromDomain.Find(Encoding.UTF8.GetBytes("Subject: x\r\n" + header + "To: a@b.test\r\n\r\nbody"));
        Assert.Equal(domain, found.Domain);
        Assert.Null(found.Problem);
    }

    [Theory]
    [InlineData("Subject: x\r\n\r\n", "no From field")]
    [InlineData("From: a@example.com\r\nFROM: b@example.com\r\n\r\n", "2 From fields")]
    [InlineData("From: a@example.com, b@example.net\r\n\r\n", "2 addresses in From")]
    [InlineData("From: undisclosed:;\r\n\r\n", "no address in From")]
    [InlineData("From: a@[192.0.2.1]\r\n\r\n", "the From domain is an address literal")]
    public async Task Messages_without_exactly_one_From_address_are_a_permerror_with_reject(string headers, string problem)
    {
        var verdict = await Evaluator().EvaluateAsync(Encoding.UTF8.GetBytes(headers + "body"), null, [], CancellationToken.None);
        Assert.Equal((DmarcResult.PermError, DmarcPolicy.Reject), (verdict.Result, verdict.Disposition));
        Assert.Equal(problem, verdict.Problem);
    }

    [Fact]
    public async Task The_message_form_finds_the_From_and_evaluates_it()
    {
        _dns.Txt("_dmarc.example.com", "v=DMARC1; p=reject");
        var message = Encoding.UTF8.GetBytes("From: Joe <joe@example.com>\r\nSubject: hi\r\n\r\nbody\r\n");
        var verdict = await Evaluator().EvaluateAsync(message, Spf(SpfResult.Pass, "example.com"), [], CancellationToken.None);
        Assert.Equal((DmarcResult.Pass, "example.com", true), (verdict.Result, verdict.FromDomain, verdict.SpfAligned));
    }
}
