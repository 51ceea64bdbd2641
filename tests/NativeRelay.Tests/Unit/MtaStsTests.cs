using System.Net;
using NativeRelay.Routing;
using NativeRelay.TlsPolicies;
using NativeRelay.TlsPolicies.MtaSts;
using NativeRelay.Tests.Support;
using Xunit;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// MTA-STS (RFC 8461): the TXT record and policy parsers (strict: bad input is refused, with its
/// reason), MX pattern matching, the policy cache (expiry, refresh on a new record id, the file
/// that survives a restart) and the HTTPS fetch against a real TLS server on loopback.
/// </summary>
public sealed class MtaStsTests
{
    [Theory]
    [InlineData("v=STSv1; id=20160831085700Z;", "20160831085700Z")]
    [InlineData("v=STSv1;id=abc", "abc")]
    [InlineData("v=STSv1; id=1 ;  ext.x-1=val", "1")]
    [InlineData("v=STSv1;\tid=A1b2C3", "A1b2C3")]
    public void Txt_records_that_follow_the_grammar_parse(string text, string id)
    {
        var record = MtaStsRecord.TryParse(text, out string? error);
        Assert.True(record is not null, error);
        Assert.Equal(id, record!.Id);
    }

    [Theory]
    [InlineData("v=STSv1")]                                   // no id
    [InlineData("v=STSv1;")]                                  // no id
    [InlineData("v=STSv2; id=1")]                             // another version
    [InlineData(" v=STSv1; id=1")]                            // must start with the version
    [InlineData("v=STSv1; id=")]                              // empty id
    [InlineData("v=STSv1; id=abc-def")]                       // id: letters and digits only
    [InlineData("v=STSv1; id=123456789012345678901234567890123")] // 33 characters
    [InlineData("v=STSv1; id=1; id=2")]                       // twice
    [InlineData("v=STSv1 id=1")]                              // no delimiter
    [InlineData("v=STSv1; id=1; bad field=1")]                // not a field name
    [InlineData("v=STSv1; id=1; _x=1")]                       // a name starts with a letter or digit
    [InlineData("v=STSv1; id=1; x")]                          // no '='
    public void Txt_records_off_the_grammar_are_refused(string text)
    {
        Assert.Null(MtaStsRecord.TryParse(text, out string? error));
        Assert.False(string.IsNullOrEmpty(error));
    }

    [Fact]
    public void Only_one_stsv1_record_counts_and_others_are_ignored()
    {
        Assert.Equal("7", MtaStsRecord.FromTxt(["v=spf1 -all", "v=STSv1; id=7"], out _)!.Id);
        Assert.Null(MtaStsRecord.FromTxt(["v=STSv1; id=7", "v=STSv1; id=8"], out string? error));
        Assert.Contains("2 STSv1 records", error);
        Assert.Null(MtaStsRecord.FromTxt(["v=spf1 -all"], out _));
    }

    private const string Good = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n";

    [Fact]
    public void A_policy_parses_with_crlf_or_lf_and_extension_fields()
    {
        var policy = MtaStsPolicy.TryParse(Good, out string? error);
        Assert.True(policy is not null, error);
        Assert.Equal(MtaStsMode.Enforce, policy!.Mode);
        Assert.Equal(604800, policy.MaxAge);
        Assert.Equal(["mail.example.com", "*.example.net"], policy.Mx);

        var lf = MtaStsPolicy.TryParse("version: STSv1\nmode: testing\nmx: MX.Example.org\nmax_age:86400\nfuture_ext: some value\n", out error);
        Assert.True(lf is not null, error);
        Assert.Equal(MtaStsMode.Testing, lf!.Mode);
        Assert.Equal(["mx.example.org"], lf.Mx);

        var none = MtaStsPolicy.TryParse("version: STSv1\nmode: none\nmax_age: 0\n", out error);
        Assert.True(none is not null, error);
        Assert.Equal(MtaStsMode.None, none!.Mode);
    }

    [Theory]
    [InlineData("mode: enforce\nmx: a.example\nmax_age: 1\n", "no version")]
    [InlineData("version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", "not STSv1")]
    [InlineData("version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n", "not enforce, testing or none")]
    [InlineData("version: STSv1\nmode: enforce\nmx: a.example\n", "no max_age")]
    [InlineData("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx")]
    [InlineData("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n", "max_age")]
    [InlineData("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", "max_age")]
    [InlineData("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n", "max_age")]
    [InlineData("version: STSv1\nmode: enforce\nmode: testing\nmx: a.example\nmax_age: 1\n", "mode appears twice")]
    [InlineData("version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n", "mx")]
    [InlineData("version: STSv1\nmode: enforce\nmx: a*.example\nmax_age: 1\n", "mx")]
    [InlineData("version: STSv1\nmode: enforce\nmx: example\nmax_age: 1\n", "mx")]
    [InlineData("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\ngarbage\n", "not 'key: value'")]
    [InlineData("<html><body>not a policy</body></html>", "not 'key: value'")]
    [InlineData("version: STSv1\nmode: enforce\nmx: a.ex\u00e4mple\nmax_age: 1\n", "not printable ASCII")]
    public void Bad_policies_are_refused_with_the_reason(string text, string reason)
    {
        Assert.Null(MtaStsPolicy.TryParse(text, out string? error));
        Assert.Contains(reason, error);
    }

    [Theory]
    [InlineData("mail.example.com", true)]
    [InlineData("MAIL.Example.COM.", true)]
    [InlineData("mx1.example.net", true)]
    [InlineData("example.net", false)]              // the wildcard needs one label
    [InlineData("a.b.example.net", false)]          // and exactly one
    [InlineData("mail.example.com.evil.test", false)]
    [InlineData("xexample.net", false)]
    [InlineData("other.example.com", false)]
    public void Mx_patterns_match_names_and_one_left_most_wildcard_label(string host, bool matches)
    {
        Assert.Equal(matches, MtaStsPolicy.MatchesMx(["mail.example.com", "*.example.net"], host));
    }

    [Fact]
    public void The_cache_file_round_trips_and_a_damaged_one_is_ignored()
    {
        using var dir = new TempDir("nativerelay-sts");
        var store = new MtaStsStore(dir.Path);
        var cached = new CachedMtaStsPolicy("id1", DateTimeOffset.FromUnixTimeSeconds(1_700_000_000), MtaStsPolicy.TryParse(Good, out _)!);
        store.Save("example.com", cached);
        var loaded = store.Load("example.com");
        Assert.NotNull(loaded);
        Assert.Equal("id1", loaded!.Id);
        Assert.Equal(cached.Fetched, loaded.Fetched);
        Assert.Equal(cached.Expires, loaded.Expires);
        Assert.Equal(Good, loaded.Policy.Text);
        Assert.False(File.Exists(store.PathOf("example.com") + ".tmp"));

        File.WriteAllText(store.PathOf("broken.test"), "nativerelay-mta-sts 1\nid: x y\nfetched: 1\n\nversion: STSv1\n");
        Assert.Null(store.Load("broken.test"));
        Assert.Null(store.Load("absent.test"));
    }

    // A policy host on loopback, reached through a resolver that maps its name there.
    private sealed class MapResolver(string name, IPAddress address) : IDnsResolver
    {
        public Task<MxAnswer> QueryMxAsync(string domain, CancellationToken cancel) => throw new NotSupportedException();
        public Task<TxtAnswer> QueryTxtAsync(string n, CancellationToken cancel) => throw new NotSupportedException();
        public Task<AddressAnswer> QueryAddressesAsync(string host, CancellationToken cancel) =>
            Task.FromResult(host == name ? new AddressAnswer(DnsStatus.Ok, [address], TimeSpan.FromMinutes(5))
                : new AddressAnswer(DnsStatus.NxDomain, [], TimeSpan.FromMinutes(5)));
    }

    private static async Task<(MtaStsFetchResult, TestHttpsServer)> FetchAsync(TestPki pki, string domain, Action<TestHttpsServer> setup,
        string[]? names = null, bool trust = true)
    {
        var server = new TestHttpsServer("127.0.0.1", pki.Issue(names ?? [$"mta-sts.{domain}"]));
        setup(server);
        using var dir = new TempDir("nativerelay-sts-ca");
        var verifier = trust ? new CertificateVerifier(TrustAnchors.Load(pki.WriteRoot(dir.Path), "test")) : CertificateVerifier.SystemOnly;
        var fetcher = new MtaStsFetcher(new MapResolver($"mta-sts.{domain}", IPAddress.Loopback), verifier, server.Port, TimeSpan.FromSeconds(20));
        return (await fetcher.FetchAsync(domain, CancellationToken.None), server);
    }

    [Fact]
    public async Task A_policy_is_fetched_over_verified_https_from_the_well_known_path()
    {
        using var pki = new TestPki();
        var (result, server) = await FetchAsync(pki, "fetch.test", s => s.Body = Good);
        await using var _ = server;
        Assert.True(result.Policy is not null, result.Error);
        Assert.Equal(MtaStsMode.Enforce, result.Policy!.Mode);
        var request = Assert.Single(server.Requests);
        Assert.Equal("GET", request.Method);
        Assert.Equal("/.well-known/mta-sts.txt", request.Path);
    }

    public static TheoryData<string, string, string> BadFetches => new()
    {
        { "redirect", TlsFailureType.StsPolicyFetchError, "redirect" },
        { "404", TlsFailureType.StsPolicyFetchError, "answered 404" },
        { "content-type", TlsFailureType.StsPolicyInvalid, "not text/plain" },
        { "huge", TlsFailureType.StsPolicyInvalid, "65536" },
        { "invalid", TlsFailureType.StsPolicyInvalid, "is invalid" },
        { "wrong-name", TlsFailureType.StsWebpkiInvalid, "does not name the host" },
        { "untrusted", TlsFailureType.StsWebpkiInvalid, "untrusted" },
    };

    [Theory]
    [MemberData(nameof(BadFetches))]
    public async Task A_bad_policy_host_is_a_failed_fetch_with_its_result_type(string kind, string type, string reason)
    {
        using var pki = new TestPki();
        var (result, server) = await FetchAsync(pki, "bad.test", s =>
        {
            s.Body = Good;
            switch (kind)
            {
                case "redirect":
                    s.Status = 301;
                    s.ExtraHeaders["Location"] = "https://elsewhere.test/";
                    break;
                case "404":
                    s.Status = 404;
                    break;
                case "content-type":
                    s.ContentType = "text/html";
                    break;
                case "huge":
                    s.Body = Good + new string('#', 70_000);
                    break;
                case "invalid":
                    s.Body = "version: STSv1\n";
                    break;
            }
        }, names: kind == "wrong-name" ? ["www.bad.test"] : null, trust: kind != "untrusted");
        await using var _ = server;
        Assert.Null(result.Policy);
        Assert.Equal(type, result.FailureType);
        Assert.Contains(reason, result.Error);
    }

    private sealed class FakeFetcherResolver : IDnsResolver
    {
        public Task<MxAnswer> QueryMxAsync(string domain, CancellationToken cancel) => throw new NotSupportedException();
        public Task<TxtAnswer> QueryTxtAsync(string n, CancellationToken cancel) => throw new NotSupportedException();
        public Task<AddressAnswer> QueryAddressesAsync(string host, CancellationToken cancel) =>
            Task.FromResult(new AddressAnswer(DnsStatus.Ok, [IPAddress.Loopback], TimeSpan.FromMinutes(5)));
    }

    [Fact]
    public async Task The_cache_serves_a_fresh_policy_refetches_on_a_new_id_or_expiry_and_keeps_the_old_one_when_a_fetch_fails()
    {
        using var pki = new TestPki();
        using var caDir = new TempDir("nativerelay-sts-ca");
        using var dir = new TempDir("nativerelay-sts");
        await using var server = new TestHttpsServer("127.0.0.1", pki.Issue(["mta-sts.cache.test"])) { Body = Good.Replace("604800", "1000") };
        var now = DateTimeOffset.FromUnixTimeSeconds(1_700_000_000);
        var verifier = new CertificateVerifier(TrustAnchors.Load(pki.WriteRoot(caDir.Path), "test"));
        MtaStsPolicies Make() => new(new MtaStsStore(dir.Path), new MtaStsFetcher(new FakeFetcherResolver(), verifier, server.Port), () => now);
        var policies = Make();

        Assert.Null((await policies.GetAsync("cache.test", null, CancellationToken.None)).Policy); // no record, nothing cached
        Assert.Empty(server.Requests);
        var first = await policies.GetAsync("cache.test", "a", CancellationToken.None);
        Assert.Equal("a", first.Policy!.Id);
        Assert.Single(server.Requests);
        Assert.Equal("a", (await policies.GetAsync("cache.test", "a", CancellationToken.None)).Policy!.Id);
        Assert.Equal("a", (await policies.GetAsync("cache.test", null, CancellationToken.None)).Policy!.Id); // the record went away: still in force
        Assert.Single(server.Requests);

        // A new process finds the file: no fetch.
        policies = Make();
        Assert.Equal("a", (await policies.GetAsync("cache.test", "a", CancellationToken.None)).Policy!.Id);
        Assert.Single(server.Requests);

        // A new id: fetched again.
        Assert.Equal("b", (await policies.GetAsync("cache.test", "b", CancellationToken.None)).Policy!.Id);
        Assert.Equal(2, server.Requests.Count);

        // The host fails now: the cached policy stays while it is fresh, with the failure reported.
        server.Status = 500;
        var failed = await policies.GetAsync("cache.test", "c", CancellationToken.None);
        Assert.Equal("b", failed.Policy!.Id);
        Assert.Equal(TlsFailureType.StsPolicyFetchError, failed.FetchFailureType);

        // Past max_age (1000 s), a failed fetch leaves no policy.
        now = now.AddSeconds(1001);
        var expired = await policies.GetAsync("cache.test", "c", CancellationToken.None);
        Assert.Null(expired.Policy);
        Assert.Null((await policies.GetAsync("cache.test", null, CancellationToken.None)).Policy);
    }
}

/// <summary>"TLS-Required: No" (RFC 8689 5) found by the receiving side's one header scan, and REQUIRETLS's MX rule (4.2.1).</summary>
public sealed class TlsRequiredTests
{
    [Theory]
    [InlineData("TLS-Required: No\r\n", true)]
    [InlineData("tls-required:no\r\n", true)]
    [InlineData("TLS-Required:   NO  \r\n", true)]
    [InlineData("TLS-Required: Yes\r\n", false)]
    [InlineData("TLS-Required: No thanks\r\n", false)]
    [InlineData("X-TLS-Required: No\r\n", false)]
    [InlineData("", false)]
    public void The_header_scan_finds_tls_required_no(string field, bool found)
    {
        var message = System.Text.Encoding.ASCII.GetBytes($"From: a@example.com\r\n{field}Subject: x\r\n\r\nbody\r\n");
        Assert.Equal(found, NativeRelay.Message.HeaderFacts.Scan(message).TlsRequiredNo);
    }

    [Fact]
    public void Requiretls_refuses_an_mx_host_nothing_vouches_for_before_anything_else()
    {
        Assert.StartsWith("5.7.10", RequireTlsRule.Refusal("ca", true, true, "mx.example[192.0.2.1]", nextHopTrusted: false));
        Assert.Null(RequireTlsRule.Refusal("mta-sts", true, true, "mx.example[192.0.2.1]", nextHopTrusted: true));
        Assert.StartsWith("5.7.30", RequireTlsRule.Refusal("dane", true, false, "mx.example[192.0.2.1]"));
    }
}
