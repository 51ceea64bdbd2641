using BenchmarkDotNet.Attributes;
using NativeRelay.Config;
using NativeRelay.Routing;
using NativeRelay.Tests.Support;

namespace NativeRelay.Benchmarks;

/// <summary>
/// Next-hop resolution against a real DNS responder on loopback (the test suite's, over UDP):
/// an MX answer with three exchanges asked and parsed into preference order (once per domain
/// and TTL), the whole route for a domain whose cache entry has expired (MX, then each
/// exchange's A and AAAA), and the per-message path, a domain found in the route cache.
/// </summary>
[MemoryDiagnoser]
public class RoutingBenchmarks
{
    private TestDnsServer _dns = null!;
    private DnsClientResolver _resolver = null!;
    private Router _router = null!;
    private long _nowMs = 1_000_000;

    [GlobalSetup]
    public async Task Setup()
    {
        _dns = new TestDnsServer();
        _dns.Mx("dest.example", (10, "mx1.dest.example"), (10, "mx2.dest.example"), (20, "backup.dest.example"))
            .A("mx1.dest.example", "192.0.2.10").A("mx2.dest.example", "192.0.2.11").A("backup.dest.example", "192.0.2.12")
            .Aaaa("mx1.dest.example", "2001:db8::10");
        _resolver = new DnsClientResolver([_dns.EndPoint], TimeSpan.FromSeconds(5));

        var options = new RelayOptions { Hostname = "relay.example", Listen = ["127.0.0.1:2525"], Spool = "/tmp/unused-spool" };
        options.Routing.Dns = [_dns.Address];
        var settings = RelaySettings.Validate(options);
        // The clock is the benchmark's: UncachedRoute moves it past every TTL.
        _router = new Router(settings.Routing, settings.Hostname, nowMs: () => _nowMs);
        var warm = await _router.ResolveAsync("dest.example");
        if (warm.Route is null)
            throw new InvalidOperationException($"no route in setup: {warm.Failure}");
    }

    [GlobalCleanup]
    public async Task Cleanup() => await _dns.DisposeAsync();

    /// <summary>One MX query over UDP, the answer parsed and sorted by preference.</summary>
    [Benchmark]
    public async Task<int> MxAnswer()
    {
        var answer = await _resolver.QueryMxAsync("dest.example", CancellationToken.None);
        return answer.Hosts.Count;
    }

    /// <summary>A domain's route from scratch: the MX answer, then the addresses of its exchanges.</summary>
    [Benchmark]
    public async Task<bool> UncachedRoute()
    {
        _nowMs += 24 * 3600 * 1000L;
        var result = await _router.ResolveAsync("dest.example"u8);
        return result.Route is not null;
    }

    /// <summary>What each message costs once its domain is known: a lookup in the route cache.</summary>
    [Benchmark]
    public bool CachedRoute() => _router.TryResolveCached("dest.example"u8, out _);
}
