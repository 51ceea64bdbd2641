using System.Net;
using NativeRelay.MailAuth;
using NativeRelay.Routing;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>The mail-authentication DNS cache: answers kept for their TTL (negative ones and failures too), on a clock the test moves.</summary>
public sealed class MailAuthDnsTests : IDisposable
{
    private readonly TestDnsServer _dns = new();
    private long _nowMs = 1_000_000;

    public void Dispose() => _dns.Dispose();

    private MailAuthDns Cache(int capacity = 100) =>
        new(new DnsClientResolver([_dns.EndPoint], TimeSpan.FromSeconds(2)), capacity, () => _nowMs);

    [Fact]
    public async Task Positive_answers_live_for_their_ttl()
    {
        _dns.Txt("example.com", "v=spf1 -all").Ttl("example.com", 60);
        var cache = Cache();
        Assert.Equal(DnsStatus.Ok, (await cache.QueryTxtAsync("example.com", CancellationToken.None)).Status);
        _nowMs += 59_000;
        await cache.QueryTxtAsync("EXAMPLE.com.", CancellationToken.None);
        Assert.Equal(1, _dns.Queries("example.com", "TXT"));
        _nowMs += 2_000;
        await cache.QueryTxtAsync("example.com", CancellationToken.None);
        Assert.Equal(2, _dns.Queries("example.com", "TXT"));
    }

    [Fact]
    public async Task Negative_answers_live_for_the_soa_minimum_and_failures_for_seconds()
    {
        _dns.NegativeTtl = 120;
        _dns.ServFail("broken.example");
        var cache = Cache();
        Assert.Equal(DnsStatus.NxDomain, (await cache.QueryTxtAsync("_dmarc.nothing.example", CancellationToken.None)).Status);
        Assert.Equal(DnsStatus.TempFail, (await cache.QueryMxAsync("broken.example", CancellationToken.None)).Status);
        int failed = _dns.Queries("broken.example", "MX"); // the resolver may ask twice after a SERVFAIL
        _nowMs += 4_000;
        await cache.QueryTxtAsync("_dmarc.nothing.example", CancellationToken.None);
        await cache.QueryMxAsync("broken.example", CancellationToken.None);
        Assert.Equal(1, _dns.Queries("_dmarc.nothing.example", "TXT"));
        Assert.Equal(failed, _dns.Queries("broken.example", "MX"));
        _nowMs += 2_000; // a failure is asked again after 5 s, the NXDOMAIN after 120 s
        await cache.QueryTxtAsync("_dmarc.nothing.example", CancellationToken.None);
        await cache.QueryMxAsync("broken.example", CancellationToken.None);
        Assert.Equal(1, _dns.Queries("_dmarc.nothing.example", "TXT"));
        Assert.True(_dns.Queries("broken.example", "MX") > failed);
    }

    [Fact]
    public async Task Ptr_and_address_answers_are_cached_and_the_cache_is_bounded()
    {
        _dns.Ptr("192.0.2.1", "mail.example.com").A("mail.example.com", "192.0.2.1");
        var cache = Cache(capacity: 100);
        for (int i = 0; i < 2; i++)
        {
            var ptr = await cache.QueryPtrAsync(IPAddress.Parse("192.0.2.1"), CancellationToken.None);
            Assert.Equal(["mail.example.com"], ptr.Names);
            Assert.Equal(DnsStatus.Ok, (await cache.QueryAddressesAsync("mail.example.com", CancellationToken.None)).Status);
        }
        Assert.Equal(1, _dns.Queries("1.2.0.192.in-addr.arpa", "PTR"));
        Assert.Equal(1, _dns.Queries("mail.example.com", "A"));
        for (int i = 0; i < 150; i++)
            await cache.QueryTxtAsync($"n{i}.example", CancellationToken.None);
        Assert.True(cache.CachedAnswers <= 100 + 2, $"{cache.CachedAnswers} answers kept");
    }
}
