using System.Net;
using NativeRelay.MailAuth;
using NativeRelay.MailAuth.Spf;
using NativeRelay.Routing;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// SPF (RFC 7208): the parser, macro expansion, and check_host() against records served by the
/// tests' DNS responder over UDP.
/// </summary>
public sealed class SpfTests : IDisposable
{
    private readonly TestDnsServer _dns = new();

    public SpfTests()
    {
        // RFC 7208 appendix A's zone.
        _dns.Mx("example.com", (10, "mail-a.example.com"), (20, "mail-b.example.com"))
            .A("example.com", "192.0.2.10", "192.0.2.11")
            .A("amy.example.com", "192.0.2.65")
            .A("bob.example.com", "192.0.2.66")
            .A("mail-a.example.com", "192.0.2.129")
            .A("mail-b.example.com", "192.0.2.130")
            .Mx("example.org", (10, "mail-c.example.org"))
            .A("mail-c.example.org", "192.0.2.140")
            .Ptr("192.0.2.10", "example.com")
            .Ptr("192.0.2.11", "example.com")
            .Ptr("192.0.2.65", "amy.example.com")
            .Ptr("192.0.2.66", "bob.example.com")
            .Ptr("192.0.2.129", "mail-a.example.com")
            .Ptr("192.0.2.130", "mail-b.example.com")
            .Ptr("192.0.2.140", "mail-c.example.org")
            .Ptr("10.2.3.4", "bob.example.com");
    }

    public void Dispose() => _dns.Dispose();

    private SpfEvaluator Evaluator() => new(new DnsClientResolver([_dns.EndPoint], TimeSpan.FromSeconds(2)), "mx.receiver.test");

    private Task<SpfVerdict> Check(string ip, string mailFrom = "user@example.com", string helo = "client.example.com") =>
        Evaluator().CheckAsync(IPAddress.Parse(ip), mailFrom, helo, CancellationToken.None);

    // ---- RFC 7208 appendix A.1 ----

    [Theory]
    [InlineData("v=spf1 +all", "192.0.2.200", SpfResult.Pass)]
    [InlineData("v=spf1 a -all", "192.0.2.10", SpfResult.Pass)]
    [InlineData("v=spf1 a -all", "192.0.2.11", SpfResult.Pass)]
    [InlineData("v=spf1 a -all", "192.0.2.12", SpfResult.Fail)]
    [InlineData("v=spf1 a:example.org -all", "192.0.2.10", SpfResult.Fail)]
    [InlineData("v=spf1 mx -all", "192.0.2.129", SpfResult.Pass)]
    [InlineData("v=spf1 mx -all", "192.0.2.130", SpfResult.Pass)]
    [InlineData("v=spf1 mx -all", "192.0.2.10", SpfResult.Fail)]
    [InlineData("v=spf1 mx:example.org -all", "192.0.2.140", SpfResult.Pass)]
    [InlineData("v=spf1 mx:example.org -all", "192.0.2.129", SpfResult.Fail)]
    [InlineData("v=spf1 mx mx:example.org -all", "192.0.2.129", SpfResult.Pass)]
    [InlineData("v=spf1 mx mx:example.org -all", "192.0.2.140", SpfResult.Pass)]
    [InlineData("v=spf1 mx/30 mx:example.org/30 -all", "192.0.2.131", SpfResult.Pass)]
    [InlineData("v=spf1 mx/30 mx:example.org/30 -all", "192.0.2.143", SpfResult.Pass)]
    [InlineData("v=spf1 mx/30 mx:example.org/30 -all", "192.0.2.132", SpfResult.Fail)]
    [InlineData("v=spf1 ptr -all", "192.0.2.10", SpfResult.Pass)]
    [InlineData("v=spf1 ptr -all", "192.0.2.65", SpfResult.Pass)]
    [InlineData("v=spf1 ptr -all", "192.0.2.130", SpfResult.Pass)]
    [InlineData("v=spf1 ptr -all", "192.0.2.140", SpfResult.Fail)]  // mail-c.example.org is not in example.com
    [InlineData("v=spf1 ptr -all", "10.2.3.4", SpfResult.Fail)]     // bob.example.com does not resolve back to it
    [InlineData("v=spf1 ip4:192.0.2.128/28 -all", "192.0.2.128", SpfResult.Pass)]
    [InlineData("v=spf1 ip4:192.0.2.128/28 -all", "192.0.2.143", SpfResult.Pass)]
    [InlineData("v=spf1 ip4:192.0.2.128/28 -all", "192.0.2.65", SpfResult.Fail)]
    [InlineData("v=spf1 ip4:192.0.2.128/28 ~all", "192.0.2.65", SpfResult.SoftFail)]
    [InlineData("v=spf1 ip4:192.0.2.128/28 ?all", "192.0.2.65", SpfResult.Neutral)]
    [InlineData("v=spf1 ip4:192.0.2.128/28", "192.0.2.65", SpfResult.Neutral)] // nothing matched, no redirect
    [InlineData("v=spf1 -ip4:192.0.2.65 +all", "192.0.2.65", SpfResult.Fail)]
    public async Task Appendix_A_simple_examples(string record, string ip, SpfResult expected)
    {
        _dns.Txt("example.com", record);
        var verdict = await Check(ip);
        Assert.Equal(expected, verdict.Result);
        Assert.Equal("mailfrom", verdict.Identity);
        Assert.Equal("example.com", verdict.Domain);
        Assert.Equal("user@example.com", verdict.Sender);
    }

    [Fact]
    public async Task The_matching_mechanism_is_reported()
    {
        _dns.Txt("example.com", "v=spf1 ip4:198.51.100.0/24 mx -all");
        var verdict = await Check("192.0.2.129");
        Assert.Equal(SpfResult.Pass, verdict.Result);
        Assert.Equal("mx", verdict.Mechanism);
        Assert.Null(verdict.Problem);
    }

    // ---- RFC 7208 appendix A.3: the DNSBL style, macros and exists ----

    [Theory]
    [InlineData("mary@example.com", "203.0.113.9", SpfResult.Pass)]
    [InlineData("fred+bulk@example.com", "203.0.113.9", SpfResult.Pass)]   // %{l1r+}: "fred"
    [InlineData("joel@example.com", "192.168.15.15", SpfResult.Pass)]
    [InlineData("joel@example.com", "192.168.15.16", SpfResult.Pass)]
    [InlineData("joel@example.com", "192.168.15.17", SpfResult.Fail)]
    [InlineData("tom@example.com", "192.0.2.129", SpfResult.Pass)]         // the mx
    [InlineData("tom@example.com", "203.0.113.9", SpfResult.Fail)]
    public async Task Appendix_A3_per_user_records_through_exists_and_macros(string sender, string ip, SpfResult expected)
    {
        _dns.Txt("example.com", "v=spf1 mx include:mobile-users._spf.%{d} include:remote-users._spf.%{d} -all")
            .Txt("mobile-users._spf.example.com", "v=spf1 exists:%{l1r+}.%{d}")
            .Txt("remote-users._spf.example.com", "v=spf1 exists:%{ir}.%{l1r+}.%{d}")
            .A("mary.mobile-users._spf.example.com", "127.0.0.2")
            .A("fred.mobile-users._spf.example.com", "127.0.0.2")
            .A("15.15.168.192.joel.remote-users._spf.example.com", "127.0.0.2")
            .A("16.15.168.192.joel.remote-users._spf.example.com", "127.0.0.2");
        Assert.Equal(expected, (await Check(ip, sender)).Result);
    }

    // ---- include and redirect ----

    [Fact]
    public async Task Include_chain_passes_through_two_levels()
    {
        _dns.Txt("example.com", "v=spf1 include:_spf.provider.test -all")
            .Txt("_spf.provider.test", "v=spf1 ip4:198.51.100.0/24 include:_netblocks.provider.test ~all")
            .Txt("_netblocks.provider.test", "v=spf1 ip6:2001:db8:1::/48 ip4:203.0.113.0/25 -all");
        Assert.Equal(SpfResult.Pass, (await Check("198.51.100.7")).Result);
        Assert.Equal(SpfResult.Pass, (await Check("203.0.113.126")).Result);
        Assert.Equal(SpfResult.Pass, (await Check("2001:db8:1:ffff::1")).Result);
        // The included records' ~all and -all do not match: the outer -all decides.
        Assert.Equal(SpfResult.Fail, (await Check("203.0.113.200")).Result);
    }

    [Fact]
    public async Task Include_of_a_domain_without_a_record_is_a_permerror()
    {
        _dns.Txt("example.com", "v=spf1 include:nothing.test -all");
        var verdict = await Check("192.0.2.1");
        Assert.Equal(SpfResult.PermError, verdict.Result);
        Assert.Contains("nothing.test", verdict.Problem);
    }

    [Fact]
    public async Task Include_that_fails_temporarily_is_a_temperror()
    {
        _dns.Txt("example.com", "v=spf1 include:broken.test -all").ServFail("broken.test");
        Assert.Equal(SpfResult.TempError, (await Check("192.0.2.1")).Result);
    }

    [Fact]
    public async Task Redirect_takes_the_other_domains_result_and_explanation()
    {
        _dns.Txt("example.com", "v=spf1 ip4:192.0.2.1 redirect=_spf.example.net exp=exp.example.com")
            .Txt("_spf.example.net", "v=spf1 ip4:198.51.100.1 -all exp=exp.example.net")
            .Txt("exp.example.com", "not this one")
            .Txt("exp.example.net", "%{i} is not one of %{d}'s senders");
        Assert.Equal(SpfResult.Pass, (await Check("192.0.2.1")).Result);
        Assert.Equal(SpfResult.Pass, (await Check("198.51.100.1")).Result);
        var fail = await Check("203.0.113.5");
        Assert.Equal(SpfResult.Fail, fail.Result);
        Assert.Equal("203.0.113.5 is not one of _spf.example.net's senders", fail.Explanation);
    }

    [Fact]
    public async Task Redirect_is_ignored_when_all_is_present_and_missing_target_is_a_permerror()
    {
        _dns.Txt("example.com", "v=spf1 -all redirect=_spf.example.net")
            .Txt("_spf.example.net", "v=spf1 +all")
            .Txt("example.org", "v=spf1 redirect=nothing.test");
        Assert.Equal(SpfResult.Fail, (await Check("192.0.2.1")).Result);
        Assert.Equal(SpfResult.PermError, (await Check("192.0.2.1", "a@example.org")).Result);
    }

    [Fact]
    public async Task Include_and_redirect_loops_are_permerrors()
    {
        _dns.Txt("example.com", "v=spf1 include:loop.test -all")
            .Txt("loop.test", "v=spf1 include:example.com -all")
            .Txt("example.org", "v=spf1 redirect=example.org");
        var include = await Check("192.0.2.1");
        Assert.Equal(SpfResult.PermError, include.Result);
        Assert.Contains("loop", include.Problem);
        Assert.Equal(SpfResult.PermError, (await Check("192.0.2.1", "a@example.org")).Result);
    }

    // ---- the limits of RFC 7208 4.6.4 ----

    [Fact]
    public async Task Ten_dns_terms_are_allowed_the_eleventh_is_a_permerror()
    {
        // example.com: 9 a terms on names that exist, then include (the 10th) that passes.
        var terms = string.Join(' ', Enumerable.Range(1, 9).Select(i => $"a:h{i}.example.com"));
        for (int i = 1; i <= 9; i++)
            _dns.A($"h{i}.example.com", $"198.51.100.{i}");
        _dns.Txt("example.com", $"v=spf1 {terms} include:ok.test -all")
            .Txt("ok.test", "v=spf1 ip4:192.0.2.1 -all")
            .Txt("example.org", $"v=spf1 {terms} include:ok.test mx -all");
        Assert.Equal(SpfResult.Pass, (await Check("192.0.2.1")).Result);
        var over = await Check("192.0.2.99", "a@example.org");
        Assert.Equal(SpfResult.PermError, over.Result);
        Assert.Contains("10 DNS", over.Problem);
        // ip4 and all cost nothing: a pass before the limit is reached stays a pass.
        Assert.Equal(SpfResult.Pass, (await Check("192.0.2.1", "a@example.org")).Result);
    }

    [Fact]
    public async Task Include_chain_deeper_than_the_limit_is_a_permerror()
    {
        for (int i = 0; i < 11; i++)
            _dns.Txt($"l{i}.test", $"v=spf1 include:l{i + 1}.test -all");
        _dns.Txt("l11.test", "v=spf1 +all");
        _dns.Txt("example.com", "v=spf1 include:l0.test -all");
        Assert.Equal(SpfResult.PermError, (await Check("192.0.2.1")).Result);
        _dns.Txt("example.com", "v=spf1 include:l2.test -all"); // 10 includes: within the limit
        Assert.Equal(SpfResult.Pass, (await Check("192.0.2.1")).Result);
    }

    [Fact]
    public async Task Two_void_lookups_are_allowed_the_third_is_a_permerror()
    {
        _dns.Exists("nodata.example.com");
        _dns.Txt("example.com", "v=spf1 a:gone1.example.com mx:nodata.example.com -all")
            .Txt("example.org", "v=spf1 a:gone1.example.com mx:nodata.example.com exists:gone2.example.com -all");
        Assert.Equal(SpfResult.Fail, (await Check("192.0.2.1")).Result);
        var verdict = await Check("192.0.2.1", "a@example.org");
        Assert.Equal(SpfResult.PermError, verdict.Result);
        Assert.Contains("void", verdict.Problem);
    }

    [Fact]
    public async Task More_than_ten_mx_names_is_a_permerror()
    {
        var hosts = Enumerable.Range(1, 11).Select(i => (i, $"mx{i}.example.net")).ToArray();
        _dns.Mx("example.net", hosts);
        _dns.Txt("example.com", "v=spf1 mx:example.net -all");
        Assert.Equal(SpfResult.PermError, (await Check("192.0.2.1")).Result);
        _dns.Mx("example.net", hosts[..10]);
        _dns.A("mx10.example.net", "192.0.2.1");
        Assert.Equal(SpfResult.Pass, (await Check("192.0.2.1")).Result);
    }

    // ---- records: none, several, broken, DNS failures ----

    [Fact]
    public async Task No_record_is_none_and_other_txt_records_do_not_count()
    {
        _dns.Txt("example.com", "google-site-verification=abc", "v=spf10 +all");
        Assert.Equal(SpfResult.None, (await Check("192.0.2.1")).Result);
        Assert.Equal(SpfResult.None, (await Check("192.0.2.1", "a@unknown.test")).Result); // NXDOMAIN
        Assert.Equal(SpfResult.None, (await Check("192.0.2.1", "a@localhost")).Result);    // not multi-label
    }

    [Fact]
    public async Task Two_records_are_a_permerror()
    {
        _dns.Txt("example.com", "v=spf1 +all", "V=SPF1 -all");
        Assert.Equal(SpfResult.PermError, (await Check("192.0.2.1")).Result);
    }

    [Fact]
    public async Task Servfail_is_a_temperror()
    {
        _dns.Txt("example.com", "v=spf1 a:broken.example.com -all").ServFail("broken.example.com");
        var verdict = await Check("192.0.2.1");
        Assert.Equal(SpfResult.TempError, verdict.Result);
        Assert.Contains("SERVFAIL", verdict.Problem);
        _dns.ServFail("example.org");
        Assert.Equal(SpfResult.TempError, (await Check("192.0.2.1", "a@example.org")).Result);
    }

    [Theory]
    [InlineData("v=spf1 foo -all")]
    [InlineData("v=spf1 ip4:192.0.2.1/33 -all")]
    [InlineData("v=spf1 ip4:192.0.2 -all")]
    [InlineData("v=spf1 ip4:192.0.2.1/024 -all")]
    [InlineData("v=spf1 ip6:192.0.2.1 -all")]
    [InlineData("v=spf1 ip6:2001:db8::/129 -all")]
    [InlineData("v=spf1 include -all")]
    [InlineData("v=spf1 include:example -all")]
    [InlineData("v=spf1 a:example.123 -all")]
    [InlineData("v=spf1 a:example.com/ -all")]
    [InlineData("v=spf1 mx:example.com//130 -all")]
    [InlineData("v=spf1 all:x")]
    [InlineData("v=spf1 exists:%{x}.example.com -all")]
    [InlineData("v=spf1 exists:%{d0}.example.com -all")]
    [InlineData("v=spf1 exists:%{d -all")]
    [InlineData("v=spf1 a:%a.example.com -all")]
    [InlineData("v=spf1 redirect=a.example.com redirect=b.example.com")]
    [InlineData("v=spf1 -all exp=a.example.com exp=b.example.com")]
    public async Task Syntax_errors_are_permerrors(string record)
    {
        Assert.False(SpfRecord.TryParse(record, out _, out string? error));
        Assert.NotNull(error);
        _dns.Txt("example.com", record);
        var verdict = await Check("192.0.2.10");
        Assert.Equal(SpfResult.PermError, verdict.Result);
        Assert.Contains("invalid", verdict.Problem);
    }

    [Fact]
    public void Parser_reads_every_mechanism_with_its_qualifier_and_lengths()
    {
        Assert.True(SpfRecord.TryParse("v=spf1 a mx/24 ~a:mail.%{d}/28//64 ?mx:example.net//48 ptr -ptr:example.org ip4:192.0.2.0/24 ip6:2001:db8::/32 exists:%{ir}.bl.test include:_spf.test unknown=%{d} redirect=_spf.%{d} exp=why.%{d} -ALL", out var record, out _));
        var m = record.Mechanisms;
        Assert.Equal(11, m.Count);
        Assert.Equal((SpfResult.Pass, SpfMechanismKind.A, (string?)null, 32, 128), (m[0].Qualifier, m[0].Kind, m[0].DomainSpec, m[0].Cidr4, m[0].Cidr6));
        Assert.Equal((SpfMechanismKind.Mx, 24, 128), (m[1].Kind, m[1].Cidr4, m[1].Cidr6));
        Assert.Equal((SpfResult.SoftFail, "mail.%{d}", 28, 64), (m[2].Qualifier, m[2].DomainSpec, m[2].Cidr4, m[2].Cidr6));
        Assert.Equal((SpfResult.Neutral, "example.net", 32, 48), (m[3].Qualifier, m[3].DomainSpec, m[3].Cidr4, m[3].Cidr6));
        Assert.Equal((SpfMechanismKind.Ptr, (string?)null), (m[4].Kind, m[4].DomainSpec));
        Assert.Equal((SpfResult.Fail, "example.org"), (m[5].Qualifier, m[5].DomainSpec));
        Assert.Equal((IPAddress.Parse("192.0.2.0"), 24), (m[6].Network, m[6].Cidr4));
        Assert.Equal((IPAddress.Parse("2001:db8::"), 32), (m[7].Network, m[7].Cidr6));
        Assert.Equal((SpfMechanismKind.Exists, "%{ir}.bl.test"), (m[8].Kind, m[8].DomainSpec));
        Assert.Equal((SpfMechanismKind.Include, "_spf.test"), (m[9].Kind, m[9].DomainSpec));
        Assert.Equal("_spf.%{d}", record.Redirect);
        Assert.Equal("why.%{d}", record.Explanation);
        Assert.True(SpfRecord.TryParse("v=spf1 -ALL", out var all, out _));
        Assert.Equal((SpfResult.Fail, SpfMechanismKind.All), (all.Mechanisms[0].Qualifier, all.Mechanisms[0].Kind));
        Assert.True(SpfRecord.TryParse("v=spf1", out var empty, out _));
        Assert.Empty(empty.Mechanisms);
    }

    // ---- macros: RFC 7208 7.4 ----

    [Theory]
    [InlineData("%{s}", "strong-bad@email.example.com")]
    [InlineData("%{o}", "email.example.com")]
    [InlineData("%{d}", "email.example.com")]
    [InlineData("%{d4}", "email.example.com")]
    [InlineData("%{d3}", "email.example.com")]
    [InlineData("%{d2}", "example.com")]
    [InlineData("%{d1}", "com")]
    [InlineData("%{dr}", "com.example.email")]
    [InlineData("%{d2r}", "example.email")]
    [InlineData("%{l}", "strong-bad")]
    [InlineData("%{l-}", "strong.bad")]
    [InlineData("%{lr}", "strong-bad")]
    [InlineData("%{lr-}", "bad.strong")]
    [InlineData("%{l1r-}", "strong")]
    [InlineData("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com")]
    [InlineData("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com")]
    [InlineData("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com")]
    [InlineData("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com")]
    [InlineData("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net")]
    [InlineData("%{h}", "mx.example.org")]
    [InlineData("%%%_%-", "% %20")]
    [InlineData("%{S}", "strong-bad%40email.example.com")]
    public void Macro_expansion_of_RFC_7208_section_7_4(string macro, string expected)
    {
        var context = new SpfMacroContext(IPAddress.Parse("192.0.2.3"), "strong-bad@email.example.com", "email.example.com", "mx.example.org");
        Assert.True(SpfMacro.IsValid(macro, false, out _));
        Assert.Equal(expected, SpfMacro.Expand(macro, context));
    }

    [Fact]
    public void Macro_expansion_of_an_IPv6_client()
    {
        var context = new SpfMacroContext(IPAddress.Parse("2001:db8::cb01"), "strong-bad@email.example.com", "email.example.com", "mx.example.org");
        Assert.Equal("1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com",
            SpfMacro.Expand("%{ir}.%{v}._spf.%{d2}", context));
    }

    [Theory]
    [InlineData("192.0.2.65", SpfResult.Pass)]    // validated as amy.example.com
    [InlineData("192.0.2.140", SpfResult.Fail)]   // mail-c.example.org: validated, but not listed
    [InlineData("10.2.3.4", SpfResult.Pass)]      // bob.example.com does not point back: "unknown"
    public async Task The_p_macro_is_the_validated_name_or_unknown(string ip, SpfResult expected)
    {
        _dns.Txt("example.com", "v=spf1 exists:%{p}.allow.example.com -all")
            .A("amy.example.com.allow.example.com", "127.0.0.2")
            .A("unknown.allow.example.com", "127.0.0.2");
        Assert.Equal(expected, (await Check(ip)).Result);
    }

    [Fact]
    public async Task An_expansion_over_253_characters_loses_labels_on_the_left()
    {
        string local = string.Join('.', Enumerable.Repeat("abcdefg", 8)); // 63 characters, 8 labels
        string full = $"{local}.{local}.{local}.{local}.example.com";      // 267 characters
        string expected = full[16..];                                        // two labels fewer: 251
        Assert.Equal(251, expected.Length);
        _dns.Txt("example.com", "v=spf1 exists:%{l}.%{l}.%{l}.%{l}.example.com -all").A(expected, "127.0.0.2");
        Assert.Equal(SpfResult.Pass, (await Check("192.0.2.1", local + "@example.com")).Result);
    }

    [Fact]
    public void Explanation_only_letters_are_refused_outside_exp_text()
    {
        Assert.False(SpfMacro.IsValid("%{c}.example.com", false, out _));
        Assert.True(SpfMacro.IsValid("%{c} at %{t} via %{r}", true, out _));
    }

    // ---- addresses, identities, explanation, caching ----

    [Fact]
    public async Task IPv6_clients_match_ip6_and_aaaa_and_mapped_IPv4_is_IPv4()
    {
        _dns.Aaaa("v6.example.com", "2001:db8:2::25");
        _dns.Txt("example.com", "v=spf1 ip6:2001:db8:1::/64 a:v6.example.com//120 ip4:192.0.2.0/24 -all");
        Assert.Equal(SpfResult.Pass, (await Check("2001:db8:1::99")).Result);
        Assert.Equal(SpfResult.Pass, (await Check("2001:db8:2::ff")).Result);
        Assert.Equal(SpfResult.Fail, (await Check("2001:db8:2::1:1")).Result);
        Assert.Equal(SpfResult.Pass, (await Check("::ffff:192.0.2.77")).Result);
        Assert.Equal(SpfResult.Fail, (await Check("::ffff:198.51.100.1")).Result);
    }

    [Fact]
    public async Task Null_sender_checks_the_helo_name_as_postmaster()
    {
        _dns.Txt("mail.example.org", "v=spf1 exists:%{l}.%{d} -all").A("postmaster.mail.example.org", "127.0.0.2");
        var verdict = await Check("192.0.2.1", "", "mail.example.org");
        Assert.Equal((SpfResult.Pass, "helo", "mail.example.org", "postmaster@mail.example.org"),
            (verdict.Result, verdict.Identity, verdict.Domain, verdict.Sender));
        var literal = await Check("192.0.2.1", "", "[192.0.2.1]");
        Assert.Equal((SpfResult.None, "helo"), (literal.Result, literal.Identity));
    }

    [Fact]
    public async Task An_internationalized_sender_domain_is_looked_up_by_its_A_label()
    {
        _dns.Txt("xn--bcher-kva.example", "v=spf1 ip4:192.0.2.1 -all");
        var verdict = await Check("192.0.2.1", "kunde@Bücher.example");
        Assert.Equal((SpfResult.Pass, "xn--bcher-kva.example"), (verdict.Result, verdict.Domain));
    }

    [Fact]
    public async Task Fail_carries_the_expanded_explanation()
    {
        _dns.Txt("example.com", "v=spf1 mx -all exp=explain._spf.%{d}")
            .Txt("explain._spf.example.com", "See http://%{d}/why.html?s=%{S}&i=%{C} (%{r})");
        var verdict = await Check("192.0.2.1", "joe@example.com");
        Assert.Equal(SpfResult.Fail, verdict.Result);
        Assert.Equal("See http://example.com/why.html?s=joe%40example.com&i=192.0.2.1 (mx.receiver.test)", verdict.Explanation);
    }

    [Fact]
    public async Task Answers_are_cached_for_their_ttl()
    {
        _dns.Txt("example.com", "v=spf1 mx -all");
        var cached = new SpfEvaluator(new MailAuthDns(new DnsClientResolver([_dns.EndPoint], TimeSpan.FromSeconds(2))));
        for (int i = 0; i < 3; i++)
            Assert.Equal(SpfResult.Pass, (await cached.CheckAsync(IPAddress.Parse("192.0.2.129"), "a@example.com", "h.test", CancellationToken.None)).Result);
        Assert.Equal(1, _dns.Queries("example.com", "TXT"));
        Assert.Equal(1, _dns.Queries("example.com", "MX"));
        Assert.Equal(1, _dns.Queries("mail-a.example.com", "A"));
    }
}
