using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using NativeRelay.Routing;
using NativeRelay.TlsPolicies;
using NativeRelay.Tests.Support;
using Xunit;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// DANE (RFC 7672, RFC 6698, RFC 7671): TLSA matching (usages, selectors, matching types, the
/// unusable records), the resolver's TLSA and AD-bit answers from the tests' DNS responder over
/// UDP, and the policy decision made from them.
/// </summary>
public sealed class DaneTests
{
    public static TlsaRecordData Record(byte usage, byte selector, byte matching, X509Certificate2 certificate)
    {
        byte[] selected = selector == 0 ? certificate.RawData : certificate.PublicKey.ExportSubjectPublicKeyInfo();
        byte[] data = matching switch { 0 => selected, 1 => SHA256.HashData(selected), _ => SHA512.HashData(selected) };
        return new TlsaRecordData(usage, selector, matching, data);
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(0, 1)]
    [InlineData(0, 2)]
    [InlineData(1, 0)]
    [InlineData(1, 1)]
    [InlineData(1, 2)]
    public void Dane_ee_matches_the_leaf_by_every_selector_and_matching_type_ignoring_names_and_expiry(byte selector, byte matching)
    {
        using var pki = new TestPki();
        using var expiredWrongName = pki.Issue(["elsewhere.test"], DateTimeOffset.UtcNow.AddDays(-20), DateTimeOffset.UtcNow.AddDays(-2));
        using var other = TestPki.SelfSigned("mx.dane.test");
        var record = Record(3, selector, matching, expiredWrongName);

        Assert.True(DaneMatcher.IsUsable(record));
        Assert.Equal(CertificateProblem.None, DaneMatcher.Check([record], expiredWrongName, [], "mx.dane.test"));
        Assert.Equal(CertificateProblem.DaneMismatch, DaneMatcher.Check([record], other, [], "mx.dane.test"));
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(1, 1)]
    [InlineData(1, 2)]
    [InlineData(0, 0)]
    public void Dane_ta_anchors_the_presented_chain_and_checks_the_name_and_dates(byte selector, byte matching)
    {
        using var pki = new TestPki();
        using var leaf = pki.Issue(["mx.dane.test"]);
        using var wrongName = pki.Issue(["mx.other.test"]);
        using var expired = pki.Issue(["mx.dane.test"], DateTimeOffset.UtcNow.AddDays(-20), DateTimeOffset.UtcNow.AddDays(-2));
        using var foreign = new TestPki("Foreign CA");
        using var foreignLeaf = foreign.Issue(["mx.dane.test"]);
        var record = Record(2, selector, matching, pki.Root);

        Assert.Equal(CertificateProblem.None, DaneMatcher.Check([record], leaf, [pki.Root], "mx.dane.test"));
        Assert.Equal(CertificateProblem.NameMismatch, DaneMatcher.Check([record], wrongName, [pki.Root], "mx.dane.test"));
        Assert.Equal(CertificateProblem.Expired, DaneMatcher.Check([record], expired, [pki.Root], "mx.dane.test"));
        Assert.Equal(CertificateProblem.DaneMismatch, DaneMatcher.Check([record], foreignLeaf, [foreign.Root], "mx.dane.test"));
        // The TA was not presented: only a full certificate in the record ("2 0 0") can stand in for it.
        Assert.Equal(selector == 0 && matching == 0 ? CertificateProblem.None : CertificateProblem.DaneMismatch,
            DaneMatcher.Check([record], leaf, [], "mx.dane.test"));
    }

    [Fact]
    public void Pkix_usages_unknown_values_and_digests_of_the_wrong_length_are_unusable()
    {
        using var leaf = TestPki.SelfSigned("mx.dane.test");
        var good = Record(3, 1, 1, leaf);
        TlsaRecordData[] unusable =
        [
            Record(0, 1, 1, leaf), Record(1, 1, 1, leaf), Record(4, 1, 1, leaf),
            good with { Selector = 2 }, good with { MatchingType = 3 }, good with { Data = good.Data[..31] },
            good with { MatchingType = 2 }, good with { MatchingType = 0, Data = [] },
        ];

        Assert.All(unusable, r => Assert.False(DaneMatcher.IsUsable(r)));
        Assert.Empty(DaneMatcher.Usable(unusable));
        Assert.Single(DaneMatcher.Usable([.. unusable, good]));
    }

    [Fact]
    public async Task The_resolver_reads_tlsa_records_and_the_ad_bit_from_a_validating_server()
    {
        using var leaf = TestPki.SelfSigned("mx.dane.test");
        var record = Record(3, 1, 1, leaf);
        await using var dns = new TestDnsServer { Dnssec = true };
        dns.A("mx.dane.test", "127.0.0.2").Tlsa("_25._tcp.mx.dane.test", (record.Usage, record.Selector, record.MatchingType, record.Data))
           .A("mx.plain.test", "127.0.0.3").Insecure("mx.plain.test").Exists("_25._tcp.mx.plain.test")
           .Tlsa("_25._tcp.mx.fail.test").ServFail("_25._tcp.mx.fail.test");
        var resolver = new DnsClientResolver([dns.EndPoint], TimeSpan.FromSeconds(2), dnssec: true);

        var tlsa = await resolver.QueryTlsaAsync("_25._tcp.mx.dane.test", CancellationToken.None);
        Assert.Equal(DnsStatus.Ok, tlsa.Status);
        Assert.True(tlsa.Authentic);
        var got = Assert.Single(tlsa.Records);
        Assert.Equal((3, 1, 1), (got.Usage, got.Selector, got.MatchingType));
        Assert.Equal(record.Data, got.Data);
        Assert.True((await resolver.QueryAddressesAsync("mx.dane.test", CancellationToken.None)).Authentic);

        var insecure = await resolver.QueryAddressesAsync("mx.plain.test", CancellationToken.None);
        Assert.Equal(DnsStatus.Ok, insecure.Status);
        Assert.False(insecure.Authentic);
        var none = await resolver.QueryTlsaAsync("_25._tcp.mx.plain.test", CancellationToken.None);
        Assert.Equal(DnsStatus.NoData, none.Status);
        Assert.True(none.Authentic); // a validated denial
        Assert.Equal(DnsStatus.TempFail, (await resolver.QueryTlsaAsync("_25._tcp.mx.fail.test", CancellationToken.None)).Status);
    }

    [Fact]
    public async Task The_policy_decision_follows_the_dnssec_status_of_addresses_and_tlsa()
    {
        using var leaf = TestPki.SelfSigned("mx.dane.test");
        var r = Record(3, 1, 1, leaf);
        var rd = (r.Usage, r.Selector, r.MatchingType, r.Data);
        await using var dns = new TestDnsServer { Dnssec = true };
        dns.A("mx.dane.test", "127.0.0.2").Tlsa("_25._tcp.mx.dane.test", rd)
           .A("mx.insecure-host.test", "127.0.0.2").Insecure("mx.insecure-host.test").Tlsa("_25._tcp.mx.insecure-host.test", rd)
           .A("mx.insecure-tlsa.test", "127.0.0.2").Tlsa("_25._tcp.mx.insecure-tlsa.test", rd).Insecure("_25._tcp.mx.insecure-tlsa.test")
           .A("mx.none.test", "127.0.0.2")
           .A("mx.servfail.test", "127.0.0.2").Tlsa("_25._tcp.mx.servfail.test", rd).ServFail("_25._tcp.mx.servfail.test")
           .A("mx.unusable.test", "127.0.0.2").Tlsa("_25._tcp.mx.unusable.test", (1, 1, 1, r.Data));
        var resolver = new TlsPolicyResolver(CertificateVerifier.SystemOnly,
            new DnsClientResolver([dns.EndPoint], TimeSpan.FromSeconds(2), dnssec: true));
        var route = new Route("test", RouteKind.Smtp, [], TlsPolicy.Opportunistic);

        async Task<PeerCertificateCheck> For(string host, TlsPolicy policy = TlsPolicy.Opportunistic) =>
            await resolver.ForConnectionAsync(route, new RouteHost(host, 25, 10, [System.Net.IPAddress.Loopback]), policy, CancellationToken.None);

        var dane = await For("mx.dane.test");
        Assert.Equal(TlsPolicy.Verify, dane.Policy);
        Assert.NotNull(dane.Dane);
        Assert.Equal("dane", dane.PolicyName);
        Assert.Null((await For("mx.insecure-host.test")).Dane);
        Assert.Equal(TlsPolicy.Opportunistic, (await For("mx.insecure-host.test")).Policy);
        Assert.Null((await For("mx.insecure-tlsa.test")).Dane);
        Assert.Equal(TlsPolicy.Opportunistic, (await For("mx.none.test")).Policy);
        var failed = await For("mx.servfail.test");
        Assert.NotNull(failed.Refusal);
        Assert.Equal(TlsPolicy.Verify, failed.Policy);
        var unusable = await For("mx.unusable.test");
        Assert.Null(unusable.Dane);
        Assert.Equal(TlsPolicy.Required, unusable.Policy);
        Assert.Equal(TlsPolicy.None, (await For("mx.dane.test", TlsPolicy.None)).Policy);

        // Cached for the records' lifetime: a second connection asks nothing.
        int before = dns.Queries("_25._tcp.mx.dane.test", "TLSA");
        await For("mx.dane.test");
        Assert.Equal(before, dns.Queries("_25._tcp.mx.dane.test", "TLSA"));

        // Without a trusted resolver there is no DANE at all.
        var off = new TlsPolicyResolver(CertificateVerifier.SystemOnly, null);
        Assert.Null((await off.ForConnectionAsync(route, new RouteHost("mx.dane.test", 25, 10, []), TlsPolicy.Opportunistic, CancellationToken.None)).Dane);
    }
}
