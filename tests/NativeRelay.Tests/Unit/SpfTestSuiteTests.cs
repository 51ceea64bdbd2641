using System.Net;
using NativeRelay.MailAuth.Spf;
using NativeRelay.Routing;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// Cases of the openspf.org RFC 7208 test suite (release 2014.04, rfc7208-tests.yml), section by
/// section, each zone served by the tests' DNS responder. "TIMEOUT" names answer SERVFAIL (both
/// are temperror). Where the suite allows two results, the comment says which one is ours.
/// </summary>
public sealed class SpfTestSuiteTests : IDisposable
{
    private readonly TestDnsServer _dns = new();

    public void Dispose() => _dns.Dispose();

    private async Task<SpfVerdict> Check(string host, string mailFrom, string helo)
    {
        var evaluator = new SpfEvaluator(new DnsClientResolver([_dns.EndPoint], TimeSpan.FromSeconds(2)), "mx.receiver.test");
        return await evaluator.CheckAsync(IPAddress.Parse(host), mailFrom, helo, CancellationToken.None);
    }

    /// <summary>Checks one case and asserts the suite's result, naming the case and our problem text when it differs.</summary>
    private async Task<SpfVerdict> Expect(string name, string result, string host, string mailFrom, string helo = "mail.example.com")
    {
        var verdict = await Check(host, mailFrom, helo);
        Assert.True(Enum.Parse<SpfResult>(result, ignoreCase: true) == verdict.Result,
            $"{name}: expected {result}, got {verdict.ResultName} ({verdict.Problem})");
        return verdict;
    }

    // ---- Initial processing, record lookup and selection ----

    [Theory]
    [InlineData("toolonglabel", "1.2.3.5", "lyme.eater@A123456789012345678901234567890123456789012345678901234567890123.example.com", "mail.example.net", "none")]
    [InlineData("longlabel", "1.2.3.5", "lyme.eater@A12345678901234567890123456789012345678901234567890123456789012.example.com", "mail.example.net", "fail")]
    [InlineData("emptylabel", "1.2.3.5", "lyme.eater@A...example.com", "mail.example.net", "none")]
    [InlineData("helo-not-fqdn", "1.2.3.5", "", "A2345678", "none")]
    [InlineData("helo-domain-literal", "1.2.3.5", "", "[1.2.3.5]", "none")]
    [InlineData("nolocalpart", "1.2.3.4", "@example.net", "mail.example.net", "fail")]
    [InlineData("domain-literal", "1.2.3.5", "foo@[1.2.3.5]", "OEMCOMPUTER", "none")]
    [InlineData("non-ascii-policy", "1.2.3.4", "foobar@hosed.example.com", "hosed", "permerror")]
    [InlineData("non-ascii-mech", "1.2.3.4", "foobar@hosed2.example.com", "hosed", "permerror")]
    [InlineData("non-ascii-result", "1.2.3.4", "foobar@hosed3.example.com", "hosed", "permerror")]
    [InlineData("non-ascii-non-spf", "1.2.3.4", "foobar@nothosed.example.com", "hosed", "fail")]
    [InlineData("control-char-policy", "192.0.2.3", "foobar@ctrl.example.com", "hosed", "permerror")]
    [InlineData("two-spaces", "1.2.3.4", "actually@fine.example.com", "hosed", "fail")]
    [InlineData("txttimeout", "1.2.3.4", "foo@txttimeout.example.net", "mail.example.net", "temperror")]
    [InlineData("nospace1", "1.2.3.4", "foo@example2.com", "mail.example1.com", "none")]
    [InlineData("empty", "1.2.3.4", "foo@example1.com", "mail1.example1.com", "neutral")]
    [InlineData("nospace2", "1.2.3.4", "foo@example3.com", "mail.example1.com", "pass")]
    [InlineData("multitxt1", "1.2.3.4", "foo@example5.com", "mail.example1.com", "permerror")]
    [InlineData("nospf", "1.2.3.4", "foo@mail.example1.com", "mail.example1.com", "none")]
    [InlineData("case-insensitive", "1.2.3.4", "foo@example9.com", "mail.example1.com", "softfail")]
    public async Task Initial_processing_and_record_selection(string name, string host, string mailFrom, string helo, string result)
    {
        _dns.ServFail("example.com")
            .Txt("example.net", "v=spf1 -all exp=exp.example.net")
            .Txt("exp.example.net", "%{l}")
            .Txt("a12345678901234567890123456789012345678901234567890123456789012.example.com", "v=spf1 -all")
            .Txt("hosed.example.com", "v=spf1 a:\uFEFFgarbage.example.net -all")
            .Txt("hosed2.example.com", "v=spf1 \u0080a:example.net -all")
            .Txt("hosed3.example.com", "v=spf1 a:example.net \u0096all")
            .Txt("nothosed.example.com", "v=spf1 a:example.net -all", "\u0096")
            .Txt("ctrl.example.com", "v=spf1 a:ctrl.example.com\rptr -all").A("ctrl.example.com", "192.0.2.3")
            .Txt("fine.example.com", "v=spf1 a  -all")
            .ServFail("txttimeout.example.net")
            .Txt("example3.com", "v=spf10", "v=spf1 mx").Mx("example3.com", (0, "mail.example1.com"))
            .Txt("example1.com", "v=spf1")
            .Txt("example2.com", "v=spf1mx")                     // ['v=spf1', 'mx'] joined without a space
            .A("mail.example1.com", "1.2.3.4")
            .Txt("example5.com", "v=spf1 -all", "v=spf1 +all")
            .Txt("example9.com", "v=SpF1 ~all");
        var verdict = await Expect(name, result, host, mailFrom, helo);
        if (name == "nolocalpart")
            Assert.Equal("postmaster", verdict.Explanation);
    }

    // ---- Record evaluation, all, ptr ----

    [Theory]
    [InlineData("detect-errors-anywhere", "1.2.3.4", "foo@t1.example.com", "permerror")]
    [InlineData("modifier-charset-good", "1.2.3.4", "foo@t2.example.com", "pass")]
    [InlineData("modifier-charset-bad1", "1.2.3.4", "foo@t3.example.com", "permerror")]
    [InlineData("modifier-charset-bad2", "1.2.3.4", "foo@t4.example.com", "permerror")]
    [InlineData("redirect-after-mechanisms1", "1.2.3.4", "foo@t5.example.com", "softfail")]
    [InlineData("redirect-after-mechanisms2", "1.2.3.5", "foo@t6.example.com", "fail")]
    [InlineData("default-result", "1.2.3.5", "foo@t7.example.com", "neutral")]
    [InlineData("redirect-is-modifier", "1.2.3.4", "foo@t8.example.com", "permerror")]
    [InlineData("invalid-domain", "1.2.3.4", "foo@t9.example.com", "permerror")]
    [InlineData("invalid-domain-empty-label", "1.2.3.4", "foo@t10.example.com", "fail")]   // [fail, permerror]
    [InlineData("invalid-domain-long", "1.2.3.4", "foo@t11.example.com", "fail")]          // [fail, permerror]
    [InlineData("all-dot", "1.2.3.4", "foo@e1.example.com", "permerror")]
    [InlineData("all-arg", "1.2.3.4", "foo@e2.example.com", "permerror")]
    [InlineData("all-cidr", "1.2.3.4", "foo@e3.example.com", "permerror")]
    [InlineData("all-neutral", "1.2.3.4", "foo@e4.example.com", "neutral")]
    [InlineData("all-double", "1.2.3.4", "foo@e5.example.com", "pass")]
    public async Task Record_evaluation_and_all(string name, string host, string mailFrom, string result)
    {
        _dns.A("mail.example.com", "1.2.3.4")
            .Txt("t1.example.com", "v=spf1 ip4:1.2.3.4 -all moo")
            .Txt("t2.example.com", "v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all")
            .Txt("t3.example.com", "v=spf1 moo.cow/far_out=man:dog/cat ip4:1.2.3.4 -all")
            .Txt("t4.example.com", "v=spf1 moo.cow:far_out=man:dog/cat ip4:1.2.3.4 -all")
            .Txt("t5.example.com", "v=spf1 redirect=t5.example.com ~all")
            .Txt("t6.example.com", "v=spf1 ip4:1.2.3.4 redirect=t2.example.com")
            .Txt("t7.example.com", "v=spf1 ip4:1.2.3.4")
            .Txt("t8.example.com", "v=spf1 ip4:1.2.3.4 redirect:t2.example.com")
            .Txt("t9.example.com", "v=spf1 a:foo-bar -all")
            .Txt("t10.example.com", "v=spf1 a:mail.example...com -all")
            .Txt("t11.example.com", "v=spf1 a:a123456789012345678901234567890123456789012345678901234567890123.example.com -all")
            .Txt("e1.example.com", "v=spf1 -all.")
            .Txt("e2.example.com", "v=spf1 -all:foobar")
            .Txt("e3.example.com", "v=spf1 -all/8")
            .Txt("e4.example.com", "v=spf1 ?all")
            .Txt("e5.example.com", "v=spf1 all -all");
        await Expect(name, result, host, mailFrom);
    }

    [Theory]
    [InlineData("ptr-cidr", "1.2.3.4", "foo@e1.example.com", "permerror")]
    [InlineData("ptr-match-target", "1.2.3.4", "foo@e2.example.com", "pass")]
    [InlineData("ptr-match-implicit", "1.2.3.4", "foo@e3.example.com", "pass")]
    [InlineData("ptr-nomatch-invalid", "1.2.3.4", "foo@e4.example.com", "fail")]
    [InlineData("ptr-match-ip6", "CAFE:BABE::1", "foo@e3.example.com", "pass")]
    [InlineData("ptr-empty-domain", "1.2.3.4", "foo@e5.example.com", "permerror")]
    [InlineData("ptr-case-change", "2001:db8::1", "bar@e6.example.com", "pass")]
    public async Task Ptr_mechanism(string name, string host, string mailFrom, string result)
    {
        _dns.A("mail.example.com", "1.2.3.4").Aaaa("mail.example.com", "2001:db8::1")
            .Txt("e1.example.com", "v=spf1 ptr/0 -all")
            .Txt("e2.example.com", "v=spf1 ptr:example.com -all")
            .Ptr("1.2.3.4", "e3.example.com", "e4.example.com", "mail.example.com")
            .Ptr("CAFE:BABE::1", "e3.example.com")
            .Ptr("2001:db8::1", "mail.Example.com")
            .Txt("e3.example.com", "v=spf1 ptr -all").A("e3.example.com", "1.2.3.4").Aaaa("e3.example.com", "CAFE:BABE::1")
            .Txt("e4.example.com", "v=spf1 ptr -all")
            .Txt("e5.example.com", "v=spf1 ptr:")
            .Txt("e6.example.com", "v=spf1 ptr:example.Com -all");
        await Expect(name, result, host, mailFrom);
    }

    // ---- a, mx, include, exists, ip4, ip6 ----

    [Theory]
    [InlineData("a-cidr6", "1.2.3.4", "foo@e6.example.com", "fail")]
    [InlineData("a-bad-cidr4", "1.2.3.4", "foo@e6a.example.com", "permerror")]
    [InlineData("a-bad-cidr6", "1.2.3.4", "foo@e7.example.com", "permerror")]
    [InlineData("a-dual-cidr-ip4-match", "1.2.3.4", "foo@e8.example.com", "pass")]
    [InlineData("a-dual-cidr-ip4-err", "1.2.3.4", "foo@e8e.example.com", "permerror")]
    [InlineData("a-dual-cidr-ip6-match", "2001:db8:1234::cafe:babe", "foo@e8.example.com", "pass")]
    [InlineData("a-dual-cidr-ip4-default", "1.2.3.4", "foo@e8b.example.com", "fail")]
    [InlineData("a-dual-cidr-ip6-default", "2001:db8:1234::cafe:babe", "foo@e8a.example.com", "fail")]
    [InlineData("a-multi-ip1", "1.2.3.4", "foo@e10.example.com", "pass")]
    [InlineData("a-bad-domain", "1.2.3.4", "foo@e9.example.com", "permerror")]
    [InlineData("a-nxdomain", "1.2.3.4", "foo@e1.example.com", "fail")]
    [InlineData("a-cidr4-0", "1.2.3.4", "foo@e2.example.com", "pass")]
    [InlineData("a-cidr4-0-ip6", "1234::1", "foo@e2.example.com", "fail")]
    [InlineData("a-cidr6-0-ip4", "1.2.3.4", "foo@e2a.example.com", "fail")]
    [InlineData("a-cidr6-0-ip4mapped", "::FFFF:1.2.3.4", "foo@e2a.example.com", "fail")]
    [InlineData("a-cidr6-0-ip6", "1234::1", "foo@e2a.example.com", "pass")]
    [InlineData("a-ip6-dualstack", "1234::1", "foo@ipv6.example.com", "pass")]
    [InlineData("a-cidr6-0-nxdomain", "1234::1", "foo@e2b.example.com", "fail")]
    [InlineData("a-null", "1.2.3.5", "foo@e3.example.com", "permerror")]
    [InlineData("a-numeric", "1.2.3.4", "foo@e4.example.com", "permerror")]
    [InlineData("a-numeric-toplabel", "1.2.3.4", "foo@e5.example.com", "permerror")]
    [InlineData("a-dash-in-toplabel", "1.2.3.4", "foo@e14.example.com", "pass")]
    [InlineData("a-bad-toplabel", "1.2.3.4", "foo@e12.example.com", "permerror")]
    [InlineData("a-only-toplabel", "1.2.3.4", "foo@e5a.example.com", "permerror")]
    [InlineData("a-only-toplabel-trailing-dot", "1.2.3.4", "foo@e5b.example.com", "permerror")]
    [InlineData("a-colon-domain", "1.2.3.4", "foo@e11.example.com", "pass")]
    [InlineData("a-colon-domain-ip4mapped", "::FFFF:1.2.3.4", "foo@e11.example.com", "pass")]
    [InlineData("a-empty-domain", "1.2.3.4", "foo@e13.example.com", "permerror")]
    public async Task A_mechanism(string name, string host, string mailFrom, string result)
    {
        _dns.A("mail.example.com", "1.2.3.4")
            .Txt("e1.example.com", "v=spf1 a/0 -all")
            .A("e2.example.com", "1.1.1.1").Aaaa("e2.example.com", "1234::2").Txt("e2.example.com", "v=spf1 a/0 -all")
            .Aaaa("e2a.example.com", "1234::1").Txt("e2a.example.com", "v=spf1 a//0 -all")
            .A("e2b.example.com", "1.1.1.1").Txt("e2b.example.com", "v=spf1 a//0 -all")
            .Aaaa("ipv6.example.com", "1234::1").A("ipv6.example.com", "1.1.1.1").Txt("ipv6.example.com", "v=spf1 a -all")
            .Txt("e3.example.com", "v=spf1 a:foo.example.com\0")
            .Txt("e4.example.com", "v=spf1 a:111.222.33.44")
            .Txt("e5.example.com", "v=spf1 a:abc.123")
            .Txt("e5a.example.com", "v=spf1 a:museum")
            .Txt("e5b.example.com", "v=spf1 a:museum.")
            .Txt("e6.example.com", "v=spf1 a//33 -all")
            .Txt("e6a.example.com", "v=spf1 a/33 -all")
            .Txt("e7.example.com", "v=spf1 a//129 -all")
            .A("e8.example.com", "1.2.3.5").Aaaa("e8.example.com", "2001:db8:1234::dead:beef").Txt("e8.example.com", "v=spf1 a/24//64 -all")
            .A("e8e.example.com", "1.2.3.5").Aaaa("e8e.example.com", "2001:db8:1234::dead:beef").Txt("e8e.example.com", "v=spf1 a/24/64 -all")
            .A("e8a.example.com", "1.2.3.5").Aaaa("e8a.example.com", "2001:db8:1234::dead:beef").Txt("e8a.example.com", "v=spf1 a/24 -all")
            .A("e8b.example.com", "1.2.3.5").Aaaa("e8b.example.com", "2001:db8:1234::dead:beef").Txt("e8b.example.com", "v=spf1 a//64 -all")
            .Txt("e9.example.com", "v=spf1 a:example.com:8080")
            .Txt("e10.example.com", "v=spf1 a:foo.example.com/24")
            .A("foo.example.com", "1.1.1.1", "1.2.3.5")
            .Txt("e11.example.com", "v=spf1 a:foo:bar/baz.example.com")
            .A("foo:bar/baz.example.com", "1.2.3.4")
            .Txt("e12.example.com", "v=spf1 a:example.-com")
            .Txt("e13.example.com", "v=spf1 a:")
            .Txt("e14.example.com", "v=spf1 a:foo.example.xn--zckzah -all")
            .A("foo.example.xn--zckzah", "1.2.3.4");
        await Expect(name, result, host, mailFrom);
    }

    [Theory]
    [InlineData("mx-cidr6", "1.2.3.4", "foo@e6.example.com", "fail")]
    [InlineData("mx-bad-cidr4", "1.2.3.4", "foo@e6a.example.com", "permerror")]
    [InlineData("mx-bad-cidr6", "1.2.3.4", "foo@e7.example.com", "permerror")]
    [InlineData("mx-multi-ip1", "1.2.3.4", "foo@e10.example.com", "pass")]
    [InlineData("mx-bad-domain", "1.2.3.4", "foo@e9.example.com", "permerror")]
    [InlineData("mx-nxdomain", "1.2.3.4", "foo@e1.example.com", "fail")]
    [InlineData("mx-cidr4-0", "1.2.3.4", "foo@e2.example.com", "pass")]
    [InlineData("mx-cidr4-0-ip6", "1234::1", "foo@e2.example.com", "fail")]
    [InlineData("mx-cidr6-0-ip4", "1.2.3.4", "foo@e2a.example.com", "fail")]
    [InlineData("mx-cidr6-0-ip4mapped", "::FFFF:1.2.3.4", "foo@e2a.example.com", "fail")]
    [InlineData("mx-cidr6-0-ip6", "1234::1", "foo@e2a.example.com", "pass")]
    [InlineData("mx-cidr6-0-nxdomain", "1234::1", "foo@e2b.example.com", "fail")]
    [InlineData("mx-null", "1.2.3.5", "foo@e3.example.com", "permerror")]
    [InlineData("mx-numeric-top-label", "1.2.3.4", "foo@e5.example.com", "permerror")]
    [InlineData("mx-colon-domain", "1.2.3.4", "foo@e11.example.com", "pass")]
    [InlineData("mx-colon-domain-ip4mapped", "::FFFF:1.2.3.4", "foo@e11.example.com", "pass")]
    [InlineData("mx-bad-toplab", "1.2.3.4", "foo@e12.example.com", "permerror")]
    [InlineData("mx-empty", "1.2.3.4", "", "neutral")]
    [InlineData("mx-implicit", "1.2.3.4", "foo@e4.example.com", "neutral")]
    [InlineData("mx-empty-domain", "1.2.3.4", "foo@e13.example.com", "permerror")]
    public async Task Mx_mechanism(string name, string host, string mailFrom, string result)
    {
        _dns.A("mail.example.com", "1.2.3.4").NullMx("mail.example.com").Txt("mail.example.com", "v=spf1 mx")
            .Txt("e1.example.com", "v=spf1 mx/0 -all").Mx("e1.example.com", (0, "e1.example.com"))
            .A("e2.example.com", "1.1.1.1").Aaaa("e2.example.com", "1234::2").Mx("e2.example.com", (0, "e2.example.com")).Txt("e2.example.com", "v=spf1 mx/0 -all")
            .Aaaa("e2a.example.com", "1234::1").Mx("e2a.example.com", (0, "e2a.example.com")).Txt("e2a.example.com", "v=spf1 mx//0 -all")
            .A("e2b.example.com", "1.1.1.1").Mx("e2b.example.com", (0, "e2b.example.com")).Txt("e2b.example.com", "v=spf1 mx//0 -all")
            .Txt("e3.example.com", "v=spf1 mx:foo.example.com\0")
            .Txt("e4.example.com", "v=spf1 mx").A("e4.example.com", "1.2.3.4")
            .Txt("e5.example.com", "v=spf1 mx:abc.123")
            .Txt("e6.example.com", "v=spf1 mx//33 -all")
            .Txt("e6a.example.com", "v=spf1 mx/33 -all")
            .Txt("e7.example.com", "v=spf1 mx//129 -all")
            .Txt("e9.example.com", "v=spf1 mx:example.com:8080")
            .Txt("e10.example.com", "v=spf1 mx:foo.example.com/24")
            .Mx("foo.example.com", (0, "foo1.example.com"))
            .A("foo1.example.com", "1.1.1.1", "1.2.3.5")
            .Txt("e11.example.com", "v=spf1 mx:foo:bar/baz.example.com")
            .Mx("foo:bar/baz.example.com", (0, "foo:bar/baz.example.com")).A("foo:bar/baz.example.com", "1.2.3.4")
            .Txt("e12.example.com", "v=spf1 mx:example.-com")
            .Txt("e13.example.com", "v=spf1 mx: -all");
        await Expect(name, result, host, mailFrom);
    }

    [Theory]
    [InlineData("include-fail", "1.2.3.4", "foo@e1.example.com", "softfail")]
    [InlineData("include-softfail", "1.2.3.4", "foo@e2.example.com", "pass")]
    [InlineData("include-neutral", "1.2.3.4", "foo@e3.example.com", "fail")]
    [InlineData("include-temperror", "1.2.3.4", "foo@e4.example.com", "temperror")]
    [InlineData("include-permerror", "1.2.3.4", "foo@e5.example.com", "permerror")]
    [InlineData("include-syntax-error", "1.2.3.4", "foo@e6.example.com", "permerror")]
    [InlineData("include-cidr", "1.2.3.4", "foo@e9.example.com", "permerror")]
    [InlineData("include-none", "1.2.3.4", "foo@e7.example.com", "permerror")]
    [InlineData("include-empty-domain", "1.2.3.4", "foo@e8.example.com", "permerror")]
    public async Task Include_mechanism(string name, string host, string mailFrom, string result)
    {
        _dns.A("mail.example.com", "1.2.3.4")
            .Txt("ip5.example.com", "v=spf1 ip4:1.2.3.5 -all")
            .Txt("ip6.example.com", "v=spf1 ip4:1.2.3.6 ~all")
            .Txt("ip7.example.com", "v=spf1 ip4:1.2.3.7 ?all")
            .ServFail("ip8.example.com")
            .Txt("erehwon.example.com", "v=spfl am not an SPF record")
            .Txt("e1.example.com", "v=spf1 include:ip5.example.com ~all")
            .Txt("e2.example.com", "v=spf1 include:ip6.example.com all")
            .Txt("e3.example.com", "v=spf1 include:ip7.example.com -all")
            .Txt("e4.example.com", "v=spf1 include:ip8.example.com -all")
            .Txt("e5.example.com", "v=spf1 include:e6.example.com -all")
            .Txt("e6.example.com", "v=spf1 include +all")
            .Txt("e7.example.com", "v=spf1 include:erehwon.example.com -all")
            .Txt("e8.example.com", "v=spf1 include: -all")
            .Txt("e9.example.com", "v=spf1 include:ip5.example.com/24 -all");
        await Expect(name, result, host, mailFrom);
    }

    [Theory]
    [InlineData("exists-empty-domain", "1.2.3.4", "foo@e1.example.com", "permerror")]
    [InlineData("exists-implicit", "1.2.3.4", "foo@e2.example.com", "permerror")]
    [InlineData("exists-cidr", "1.2.3.4", "foo@e3.example.com", "permerror")]
    [InlineData("exists-ip4", "1.2.3.4", "foo@e4.example.com", "pass")]
    [InlineData("exists-ip6", "CAFE:BABE::3", "foo@e4.example.com", "pass")]
    [InlineData("exists-ip6only", "CAFE:BABE::3", "foo@e5.example.com", "fail")]
    [InlineData("exists-dnserr", "CAFE:BABE::3", "foo@e6.example.com", "temperror")]
    [InlineData("cidr4-0", "1.2.3.4", "foo@f1.example.com", "pass")]
    [InlineData("cidr4-32", "1.2.3.4", "foo@f2.example.com", "pass")]
    [InlineData("cidr4-33", "1.2.3.4", "foo@f3.example.com", "permerror")]
    [InlineData("cidr4-032", "1.2.3.4", "foo@f4.example.com", "permerror")]
    [InlineData("bare-ip4", "1.2.3.4", "foo@f5.example.com", "permerror")]
    [InlineData("bad-ip4-port", "1.2.3.4", "foo@f8.example.com", "permerror")]
    [InlineData("bad-ip4-short", "1.2.3.4", "foo@f9.example.com", "permerror")]
    [InlineData("ip4-dual-cidr", "1.2.3.4", "foo@f6.example.com", "permerror")]
    [InlineData("ip4-mapped-ip6", "::FFFF:1.2.3.4", "foo@f7.example.com", "fail")]
    [InlineData("bare-ip6", "1.2.3.4", "foo@g1.example.com", "permerror")]
    [InlineData("cidr6-0-ip4", "1.2.3.4", "foo@g2.example.com", "neutral")]
    [InlineData("cidr6-ip4", "::FFFF:1.2.3.4", "foo@g2.example.com", "neutral")]
    [InlineData("cidr6-0", "DEAF:BABE::CAB:FEE", "foo@g2.example.com", "pass")]
    [InlineData("cidr6-129", "1.2.3.4", "foo@g3.example.com", "permerror")]
    [InlineData("cidr6-bad", "1.2.3.4", "foo@g4.example.com", "permerror")]
    [InlineData("cidr6-33", "CAFE:BABE:8000::", "foo@g5.example.com", "pass")]
    [InlineData("cidr6-33-ip4", "1.2.3.4", "foo@g5.example.com", "neutral")]
    [InlineData("ip6-bad1", "1.2.3.4", "foo@g6.example.com", "permerror")]
    public async Task Exists_ip4_and_ip6(string name, string host, string mailFrom, string result)
    {
        // The suite's exists, ip4 and ip6 sections all use e1..e7; here they are e, f and g.
        _dns.A("mail.example.com", "1.2.3.4").Aaaa("mail6.example.com", "CAFE:BABE::4").ServFail("err.example.com")
            .Txt("e1.example.com", "v=spf1 exists:")
            .Txt("e2.example.com", "v=spf1 exists")
            .Txt("e3.example.com", "v=spf1 exists:mail.example.com/24")
            .Txt("e4.example.com", "v=spf1 exists:mail.example.com")
            .Txt("e5.example.com", "v=spf1 exists:mail6.example.com -all")
            .Txt("e6.example.com", "v=spf1 exists:err.example.com -all")
            .Txt("f1.example.com", "v=spf1 ip4:1.1.1.1/0 -all")
            .Txt("f2.example.com", "v=spf1 ip4:1.2.3.4/32 -all")
            .Txt("f3.example.com", "v=spf1 ip4:1.2.3.4/33 -all")
            .Txt("f4.example.com", "v=spf1 ip4:1.2.3.4/032 -all")
            .Txt("f5.example.com", "v=spf1 ip4")
            .Txt("f6.example.com", "v=spf1 ip4:1.2.3.4//32")
            .Txt("f7.example.com", "v=spf1 -ip4:1.2.3.4 ip6:::FFFF:1.2.3.4")
            .Txt("f8.example.com", "v=spf1 ip4:1.2.3.4:8080")
            .Txt("f9.example.com", "v=spf1 ip4:1.2.3")
            .Txt("g1.example.com", "v=spf1 -all ip6")
            .Txt("g2.example.com", "v=spf1 ip6:::1.1.1.1/0")
            .Txt("g3.example.com", "v=spf1 ip6:::1.1.1.1/129")
            .Txt("g4.example.com", "v=spf1 ip6:::1.1.1.1//33")
            .Txt("g5.example.com", "v=spf1 ip6:Cafe:Babe:8000::/33")
            .Txt("g6.example.com", "v=spf1 ip6::CAFE::BABE");
        await Expect(name, result, host, mailFrom);
    }

    // ---- exp and other modifiers ----

    [Theory]
    [InlineData("redirect-none", "foo@e10.example.com", "permerror", null)]
    [InlineData("redirect-cancels-exp", "foo@e1.example.com", "fail", null)]
    [InlineData("redirect-syntax-error", "foo@e17.example.com", "permerror", null)]
    [InlineData("include-ignores-exp", "foo@e7.example.com", "fail", "Correct!")]
    [InlineData("redirect-cancels-prior-exp", "foo@e3.example.com", "fail", "See me.")]
    [InlineData("invalid-modifier", "foo@e5.example.com", "permerror", null)]
    [InlineData("empty-modifier-name", "foo@e6.example.com", "permerror", null)]
    [InlineData("dorky-sentinel", "Macro Error@e8.example.com", "fail", "Macro Error in implementation")]
    [InlineData("exp-multiple-txt", "foo@e11.example.com", "fail", null)]
    [InlineData("exp-no-txt", "foo@e22.example.com", "fail", null)]
    [InlineData("exp-dns-error", "foo@e21.example.com", "fail", null)]
    [InlineData("exp-empty-domain", "foo@e12.example.com", "permerror", null)]
    [InlineData("explanation-syntax-error", "foo@e13.example.com", "fail", null)]
    [InlineData("exp-syntax-error", "foo@e16.example.com", "permerror", null)]
    [InlineData("exp-twice", "foo@e14.example.com", "permerror", null)]
    [InlineData("redirect-empty-domain", "foo@e18.example.com", "permerror", null)]
    [InlineData("redirect-twice", "foo@e15.example.com", "permerror", null)]
    [InlineData("unknown-modifier-syntax", "foo@e9.example.com", "permerror", null)]
    [InlineData("default-modifier-obsolete", "foo@e19.example.com", "neutral", null)]
    [InlineData("default-modifier-obsolete2", "foo@e20.example.com", "neutral", null)]
    [InlineData("non-ascii-exp", "foobar@nonascii.example.com", "fail", null)]
    [InlineData("two-exp-records", "foobar@tworecs.example.com", "fail", null)]
    [InlineData("exp-void", "foo@e23.example.com", "fail", null)]
    public async Task Explanations_and_modifiers(string name, string mailFrom, string result, string? explanation)
    {
        _dns.A("mail.example.com", "1.2.3.4")
            .Txt("e1.example.com", "v=spf1 exp=exp1.example.com redirect=e2.example.com")
            .Txt("e2.example.com", "v=spf1 -all")
            .Txt("e3.example.com", "v=spf1 exp=exp1.example.com redirect=e4.example.com")
            .Txt("e4.example.com", "v=spf1 -all exp=exp2.example.com")
            .Txt("exp1.example.com", "No-see-um")
            .Txt("exp2.example.com", "See me.")
            .Txt("exp3.example.com", "Correct!")
            .Txt("exp4.example.com", "%{l} in implementation")
            .Txt("e5.example.com", "v=spf1 1up=foo")
            .Txt("e6.example.com", "v=spf1 =all")
            .Txt("e7.example.com", "v=spf1 include:e3.example.com -all exp=exp3.example.com")
            .Txt("e8.example.com", "v=spf1 -all exp=exp4.example.com")
            .Txt("e9.example.com", "v=spf1 -all foo=%abc")
            .Txt("e10.example.com", "v=spf1 redirect=erehwon.example.com")
            .Txt("e11.example.com", "v=spf1 -all exp=e11msg.example.com")
            .Txt("e11msg.example.com", "Answer a fool according to his folly.", "Do not answer a fool according to his folly.")
            .Txt("e12.example.com", "v=spf1 exp= -all")
            .Txt("e13.example.com", "v=spf1 exp=e13msg.example.com -all")
            .Txt("e13msg.example.com", "The %{x}-files.")
            .Txt("e14.example.com", "v=spf1 exp=e13msg.example.com -all exp=e11msg.example.com")
            .Txt("e15.example.com", "v=spf1 redirect=e12.example.com -all redirect=e12.example.com")
            .Txt("e16.example.com", "v=spf1 exp=-all")
            .Txt("e17.example.com", "v=spf1 redirect=-all ?all")
            .Txt("e18.example.com", "v=spf1 ?all redirect=")
            .Txt("e19.example.com", "v=spf1 default=pass")
            .Txt("e20.example.com", "v=spf1 default=+")
            .Txt("e21.example.com", "v=spf1 exp=e21msg.example.com -all")
            .ServFail("e21msg.example.com")
            .Txt("e22.example.com", "v=spf1 exp=mail.example.com -all")
            .Txt("nonascii.example.com", "v=spf1 exp=badexp.example.com -all")
            .Txt("badexp.example.com", "\uFEFFExplanation")
            .Txt("tworecs.example.com", "v=spf1 exp=twoexp.example.com -all")
            .Txt("twoexp.example.com", "one", "two")
            .Txt("e23.example.com", "v=spf1 a:erehwon.example.com a:foobar.com exp=nxdomain.com -all");
        var verdict = await Expect(name, result, "1.2.3.4", mailFrom);
        if (verdict.Result == SpfResult.Fail)
            Assert.Equal(explanation, verdict.Explanation);
    }

    [Fact]
    public async Task Redirect_changes_the_implicit_domain()
    {
        _dns.Txt("e24.example.com", "v=spf1 redirect=testimplicit.example.com").A("e24.example.com", "192.0.2.1")
            .Txt("testimplicit.example.com", "v=spf1 a -all").A("testimplicit.example.com", "192.0.2.2");
        Assert.Equal(SpfResult.Pass, (await Check("192.0.2.2", "bar@e24.example.com", "e24.example.com")).Result);
    }

    // ---- macro expansion rules ----

    [Theory]
    [InlineData("trailing-dot-domain", "192.168.218.40", "test@example.com", "msgbas2x.cos.example.com", "pass", null)]
    [InlineData("trailing-dot-exp", "192.168.218.40", "test@exp.example.com", "msgbas2x.cos.example.com", "fail", "This is a test.")]
    [InlineData("exp-only-macro-char", "192.168.218.40", "test@e2.example.com", "msgbas2x.cos.example.com", "permerror", null)]
    [InlineData("invalid-macro-char", "192.168.218.40", "test@e1.example.com", "msgbas2x.cos.example.com", "permerror", null)]
    [InlineData("invalid-embedded-macro-char", "192.168.218.40", "test@e1e.example.com", "msgbas2x.cos.example.com", "permerror", null)]
    [InlineData("invalid-trailing-macro-char", "192.168.218.40", "test@e1t.example.com", "msgbas2x.cos.example.com", "permerror", null)]
    [InlineData("macro-mania-in-domain", "1.2.3.4", "test@e1a.example.com", "mail.example.com", "pass", null)]
    [InlineData("exp-txt-macro-char", "192.168.218.40", "test@e3.example.com", "msgbas2x.cos.example.com", "fail", "Connections from 192.168.218.40 not authorized.")]
    [InlineData("domain-name-truncation", "192.168.218.40", "test@somewhat.long.exp.example.com", "msgbas2x.cos.example.com", "fail", "Congratulations!  That was tricky.")]
    [InlineData("v-macro-ip4", "192.168.218.40", "test@e4.example.com", "msgbas2x.cos.example.com", "fail", "192.168.218.40 is queried as 40.218.168.192.in-addr.arpa")]
    [InlineData("v-macro-ip6", "CAFE:BABE::1", "test@e4.example.com", "msgbas2x.cos.example.com", "fail", "cafe:babe::1 is queried as 1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.b.a.b.e.f.a.c.ip6.arpa")]
    [InlineData("undef-macro", "CAFE:BABE::192.168.218.40", "test@e5.example.com", "msgbas2x.cos.example.com", "permerror", null)]
    [InlineData("p-macro-ip4-novalid", "192.168.218.40", "test@e6.example.com", "msgbas2x.cos.example.com", "fail", "connect from unknown")]
    [InlineData("p-macro-ip4-valid", "192.168.218.41", "test@e6.example.com", "msgbas2x.cos.example.com", "fail", "connect from mx.example.com")]
    [InlineData("p-macro-ip6-novalid", "CAFE:BABE::1", "test@e6.example.com", "msgbas2x.cos.example.com", "fail", "connect from unknown")]
    [InlineData("p-macro-ip6-valid", "CAFE:BABE::3", "test@e6.example.com", "msgbas2x.cos.example.com", "fail", "connect from mx.example.com")]
    [InlineData("p-macro-multiple", "192.168.218.42", "test@e7.example.com", "msgbas2x.cos.example.com", "pass", null)] // [pass, softfail]
    [InlineData("upper-macro", "192.168.218.42", "~jack&jill=up-a_b3.c@e8.example.com", "msgbas2x.cos.example.com", "fail", "http://example.com/why.html?l=~jack%26jill%3Dup-a_b3.c")]
    [InlineData("hello-macro", "192.168.218.40", "test@e9.example.com", "msgbas2x.cos.example.com", "pass", null)]
    [InlineData("invalid-hello-macro", "192.168.218.40", "test@e9.example.com", "JUMPIN' JUPITER", "fail", null)]
    [InlineData("hello-domain-literal", "192.168.218.40", "test@e9.example.com", "[192.168.218.40]", "fail", null)]
    [InlineData("require-valid-helo", "1.2.3.4", "test@e10.example.com", "OEMCOMPUTER", "fail", null)]
    [InlineData("macro-reverse-split-on-dash", "1.2.3.4", "philip-gladstone-test@e11.example.com", "mail.example.com", "pass", null)]
    [InlineData("macro-multiple-delimiters", "1.2.3.4", "foo-bar+zip+quux@e12.example.com", "mail.example.com", "pass", null)]
    public async Task Macro_expansion_rules(string name, string host, string mailFrom, string helo, string result, string? explanation)
    {
        string longName = string.Concat(Enumerable.Repeat("somewhat.long.exp.example.com.", 8)) + "example.com";
        _dns.Txt("example.com.d.spf.example.com", "v=spf1 redirect=a.spf.example.com")
            .Txt("a.spf.example.com", "v=spf1 include:o.spf.example.com. ~all")
            .Txt("o.spf.example.com", "v=spf1 ip4:192.168.218.40")
            .A("msgbas2x.cos.example.com", "192.168.218.40")
            .A("example.com", "192.168.90.76").Txt("example.com", "v=spf1 redirect=%{d}.d.spf.example.com.")
            .Txt("exp.example.com", "v=spf1 exp=msg.example.com. -all")
            .Txt("msg.example.com", "This is a test.")
            .Txt("e1.example.com", "v=spf1 -exists:%(ir).sbl.example.com ?all")
            .Txt("e1e.example.com", "v=spf1 exists:foo%(ir).sbl.example.com ?all")
            .Txt("e1t.example.com", "v=spf1 exists:foo%.sbl.example.com ?all")
            .Txt("e1a.example.com", "v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all")
            .A("macro%percent  space%20url-space.example.com", "1.2.3.4")
            .Txt("e2.example.com", "v=spf1 -all exp=%{r}.example.com")
            .Txt("e3.example.com", "v=spf1 -all exp=%{ir}.example.com")
            .Txt("40.218.168.192.example.com", "Connections from %{c} not authorized.")
            .Txt("somewhat.long.exp.example.com", "v=spf1 -all exp=foobar.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.example.com")
            .Txt(longName, "Congratulations!  That was tricky.")
            .Txt("e4.example.com", "v=spf1 -all exp=e4msg.example.com")
            .Txt("e4msg.example.com", "%{c} is queried as %{ir}.%{v}.arpa")
            .Txt("e5.example.com", "v=spf1 a:%{a}.example.com -all")
            .Txt("e6.example.com", "v=spf1 -all exp=e6msg.example.com")
            .Txt("e6msg.example.com", "connect from %{p}")
            .A("mx.example.com", "192.168.218.41", "192.168.218.42").Aaaa("mx.example.com", "CAFE:BABE::2", "CAFE:BABE::3")
            .Ptr("192.168.218.40", "mx.example.com")
            .Ptr("192.168.218.41", "mx.example.com")
            .Ptr("192.168.218.42", "mx.example.com", "mx.e7.example.com")
            .Ptr("CAFE:BABE::1", "mx.example.com")
            .Ptr("CAFE:BABE::3", "mx.example.com")
            .A("mx.e7.example.com", "192.168.218.42")
            .A("mx.e7.example.com.should.example.com", "127.0.0.2")
            .A("mx.example.com.ok.example.com", "127.0.0.2")
            .Txt("e7.example.com", "v=spf1 exists:%{p}.should.example.com ~exists:%{p}.ok.example.com")
            .Txt("e8.example.com", "v=spf1 -all exp=msg8.%{D2}")
            .Txt("msg8.example.com", "http://example.com/why.html?l=%{L}")
            .Txt("e9.example.com", "v=spf1 a:%{H} -all")
            .Txt("e10.example.com", "v=spf1 -include:_spfh.%{d2} ip4:1.2.3.0/24 -all")
            .Txt("_spfh.example.com", "v=spf1 -a:%{h} +all")
            .Txt("e11.example.com", "v=spf1 exists:%{i}.%{l2r-}.user.%{d2}")
            .A("1.2.3.4.gladstone.philip.user.example.com", "127.0.0.2")
            .Txt("e12.example.com", "v=spf1 exists:%{l2r+-}.user.%{d2}")
            .A("bar.foo.user.example.com", "127.0.0.2");
        var verdict = await Expect(name, result, host, mailFrom, helo);
        if (explanation is not null)
            Assert.Equal(explanation, verdict.Explanation);
    }

    // ---- processing limits ----

    [Theory]
    [InlineData("redirect-loop", "1.2.3.4", "foo@e1.example.com", "permerror")]
    [InlineData("include-loop", "1.2.3.4", "foo@e2.example.com", "permerror")]
    [InlineData("mx-limit", "1.2.3.5", "foo@e4.example.com", "permerror")]
    [InlineData("ptr-limit", "1.2.3.5", "foo@e5.example.com", "neutral")]   // [neutral, pass]: the 11th PTR is not tried
    [InlineData("false-a-limit", "1.2.3.12", "foo@e10.example.com", "pass")]
    [InlineData("mech-at-limit", "1.2.3.4", "foo@e6.example.com", "pass")]
    [InlineData("mech-over-limit", "1.2.3.4", "foo@e7.example.com", "permerror")]
    [InlineData("include-at-limit", "1.2.3.4", "foo@e8.example.com", "pass")]
    [InlineData("include-over-limit", "1.2.3.4", "foo@e9.example.com", "permerror")]
    [InlineData("void-at-limit", "1.2.3.4", "foo@e12.example.com", "neutral")]
    [InlineData("void-over-limit", "1.2.3.4", "foo@e11.example.com", "permerror")]
    public async Task Processing_limits(string name, string host, string mailFrom, string result)
    {
        _dns.A("mail.example.com", "1.2.3.4")
            .Txt("e1.example.com", "v=spf1 ip4:1.1.1.1 redirect=e1.example.com").A("e1.example.com", "1.2.3.6")
            .Txt("e2.example.com", "v=spf1 include:e3.example.com").A("e2.example.com", "1.2.3.7")
            .Txt("e3.example.com", "v=spf1 include:e2.example.com").A("e3.example.com", "1.2.3.8")
            .Txt("e4.example.com", "v=spf1 mx").A("e4.example.com", "1.2.3.5")
            .Mx("e4.example.com", Enumerable.Range(0, 10).Select(i => (i, "mail.example.com")).Append((10, "e4.example.com")).ToArray())
            .Txt("e5.example.com", "v=spf1 ptr").A("e5.example.com", "1.2.3.5")
            .Ptr("1.2.3.5", "e1.example.com", "e2.example.com", "e3.example.com", "e4.example.com", "example.com", "e6.example.com",
                 "e7.example.com", "e8.example.com", "e9.example.com", "e10.example.com", "e5.example.com")
            .Txt("e6.example.com", "v=spf1 a mx a mx a mx a mx a ptr ip4:1.2.3.4 -all").A("e6.example.com", "1.2.3.8").Mx("e6.example.com", (10, "e6.example.com"))
            .Txt("e7.example.com", "v=spf1 a mx a mx a mx a mx a ptr a ip4:1.2.3.4 -all").A("e7.example.com", "1.2.3.20")
            .Txt("e8.example.com", "v=spf1 a include:inc.example.com ip4:1.2.3.4 mx -all").A("e8.example.com", "1.2.3.4")
            .Txt("inc.example.com", "v=spf1 a a a a a a a a").A("inc.example.com", "1.2.3.10")
            .Txt("e9.example.com", "v=spf1 a include:inc.example.com a ip4:1.2.3.4 -all").A("e9.example.com", "1.2.3.21")
            .Txt("e10.example.com", "v=spf1 a -all").A("e10.example.com", Enumerable.Range(1, 12).Select(i => $"1.2.3.{i}").ToArray())
            .Txt("e11.example.com", "v=spf1 a:err.example.com a:err1.example.com a:err2.example.com ?all")
            .Txt("e12.example.com", "v=spf1 a:err.example.com a:err1.example.com ?all");
        await Expect(name, result, host, mailFrom);
    }
}
