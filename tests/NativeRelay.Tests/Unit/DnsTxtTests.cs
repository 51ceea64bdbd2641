using System.Net;
using NativeRelay.Routing;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>TXT lookups (DKIM keys, SPF and DMARC records) against a real DNS responder on loopback.</summary>
public sealed class DnsTxtTests : IDisposable
{
    private readonly TestDnsServer _dns = new();

    public void Dispose() => _dns.Dispose();

    private DnsClientResolver Resolver() => new([_dns.EndPoint], TimeSpan.FromSeconds(1));

    [Fact]
    public async Task A_record_longer_than_255_octets_comes_back_joined()
    {
        string key = "v=DKIM1; k=rsa; p=" + new string('A', 600);
        _dns.Txt("s1._domainkey.example.test", key, "second record");

        var answer = await Resolver().QueryTxtAsync("s1._domainkey.example.test", CancellationToken.None);

        Assert.Equal(DnsStatus.Ok, answer.Status);
        Assert.Equal(2, answer.Records.Count);
        Assert.Contains(key, answer.Records);
        Assert.Contains("second record", answer.Records);
        Assert.Equal(TimeSpan.FromSeconds(300), answer.Ttl);
    }

    [Fact]
    public async Task Missing_names_and_types_and_failures_are_told_apart()
    {
        _dns.A("mail.example.test", "192.0.2.1").ServFail("broken.example.test");
        var resolver = Resolver();

        Assert.Equal(DnsStatus.NxDomain, (await resolver.QueryTxtAsync("nothing.example.test", CancellationToken.None)).Status);
        Assert.Equal(DnsStatus.NoData, (await resolver.QueryTxtAsync("mail.example.test", CancellationToken.None)).Status);
        var failed = await resolver.QueryTxtAsync("broken.example.test", CancellationToken.None);
        Assert.Equal(DnsStatus.TempFail, failed.Status);
        Assert.Equal("SERVFAIL", failed.Error);
    }
}
