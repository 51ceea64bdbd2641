using System.Net;
using NativeRelay.Config;
using NativeRelay.Routing;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// Next-hop resolution (RFC 5321 5.1, RFC 7505, RFC 2308) against a real DNS responder on
/// loopback, with a hand-driven clock for the cache's TTLs, and the static route table.
/// </summary>
public sealed class RoutingTests : IDisposable
{
    private readonly TestDnsServer _dns = new();
    private long _now = 1_000_000;

    public void Dispose() => _dns.Dispose();

    private Router Router(Action<RelayOptions>? configure = null, string hostname = "relay.test", string? openSslProblem = null)
    {
        var options = new RelayOptions { Hostname = hostname, Listen = ["127.0.0.1:2525"], Spool = "/tmp/unused-spool" };
        options.Routing.Dns = [_dns.Address];
        options.Routing.DnsTimeoutSeconds = 1;
        options.Routing.RemotePort = 2525;
        configure?.Invoke(options);
        var settings = RelaySettings.Validate(options);
        return new Router(settings.Routing, hostname, nowMs: () => _now, openSslProblem: () => openSslProblem);
    }

    [Theory]
    [InlineData(true, null, 1)]                          // on: asked beside the MX
    [InlineData(false, null, 0)]                         // outboundTls.mtaSts false / --no-mta-sts
    [InlineData(true, "libcrypto.so.3 is missing", 0)]   // skipped without OpenSSL: not asked either
    public async Task The_mta_sts_record_is_asked_only_when_mta_sts_is_on_and_usable(bool mtaSts, string? openSslProblem, int queries)
    {
        _dns.Mx("sts.test", (10, "mx.sts.test")).A("mx.sts.test", "192.0.2.1")
            .Txt("_mta-sts.sts.test", "v=STSv1; id=20261207;");

        var route = (await Router(o => o.OutboundTls.MtaSts = mtaSts, openSslProblem: openSslProblem).ResolveAsync("sts.test")).Route!;

        Assert.Equal(queries, _dns.Queries("_mta-sts.sts.test", "TXT"));
        Assert.Equal(["mx.sts.test"], route.Hosts.Select(h => h.Name));
        // The record's id is what gives the domain a destination of its own (for its policy).
        Assert.Equal(queries == 1 ? "20261207" : null, route.StsRecordId);
    }

    [Fact]
    public async Task Mx_hosts_come_in_preference_order_with_their_addresses()
    {
        _dns.Mx("example.test", (30, "c.example.test"), (10, "a.example.test"), (20, "b.example.test"))
            .A("a.example.test", "192.0.2.1").Aaaa("a.example.test", "2001:db8::1")
            .A("b.example.test", "192.0.2.2").A("c.example.test", "192.0.2.3");

        var result = await Router().ResolveAsync("example.test");

        var route = Assert.IsType<Route>(result.Route);
        Assert.Equal(["a.example.test", "b.example.test", "c.example.test"], route.Hosts.Select(h => h.Name));
        Assert.Equal([10, 20, 30], route.Hosts.Select(h => h.Preference));
        Assert.Equal([IPAddress.Parse("192.0.2.1"), IPAddress.Parse("2001:db8::1")], route.Hosts[0].Addresses);
        Assert.All(route.Hosts, h => Assert.Equal(2525, h.Port));
        Assert.Equal("mx:a.example.test;b.example.test;c.example.test:2525", route.Key);
    }

    [Fact]
    public async Task Hosts_without_addresses_are_left_out_and_equal_preferences_form_one_group()
    {
        _dns.Mx("eq.test", (10, "b.eq.test"), (10, "a.eq.test"), (20, "gone.eq.test"))
            .A("a.eq.test", "192.0.2.1").A("b.eq.test", "192.0.2.2");

        var route = (await Router().ResolveAsync("eq.test")).Route!;

        Assert.Equal(["a.eq.test", "b.eq.test"], route.Hosts.Select(h => h.Name));
        Assert.Equal("mx:a.eq.test,b.eq.test:2525", route.Key);
    }

    [Fact]
    public async Task No_mx_records_means_the_domain_is_its_own_host()
    {
        _dns.A("implicit.test", "192.0.2.9");

        var route = (await Router().ResolveAsync("implicit.test")).Route!;

        var host = Assert.Single(route.Hosts);
        Assert.Equal("implicit.test", host.Name);
        Assert.Equal([IPAddress.Parse("192.0.2.9")], host.Addresses);
    }

    [Fact]
    public async Task A_domain_with_neither_mx_nor_address_fails_permanently()
    {
        _dns.Exists("empty.test");

        var result = await Router().ResolveAsync("empty.test");

        Assert.Null(result.Route);
        Assert.Equal(550, result.Failure.Code);
        Assert.StartsWith("5.1.2", result.Failure.Text);
    }

    [Fact]
    public async Task A_null_mx_fails_with_556_5_1_10()
    {
        _dns.NullMx("nullmx.test");

        var result = await Router().ResolveAsync("nullmx.test");

        Assert.Null(result.Route);
        Assert.Equal(556, result.Failure.Code);
        Assert.StartsWith("5.1.10", result.Failure.Text);
        Assert.Equal(0, _dns.Queries("nullmx.test", "A")); // no implicit MX fallback
    }

    [Fact]
    public async Task Nxdomain_fails_permanently_and_servfail_transiently()
    {
        _dns.ServFail("broken.test");
        var router = Router();

        var nx = await router.ResolveAsync("missing.test");
        var servfail = await router.ResolveAsync("broken.test");

        Assert.Equal(550, nx.Failure.Code);
        Assert.StartsWith("5.1.2", nx.Failure.Text);
        Assert.True(servfail.Failure.IsTransient, servfail.ToString());
        Assert.StartsWith("4.4.3", servfail.Failure.Text);
        Assert.Contains("SERVFAIL", servfail.Failure.Text);
    }

    [Fact]
    public async Task No_answer_at_all_is_a_transient_failure()
    {
        _dns.Silent("silent.test");

        var result = await Router().ResolveAsync("silent.test");

        Assert.True(result.Failure.IsTransient, result.ToString());
    }

    [Fact]
    public async Task Answers_are_cached_for_their_ttl()
    {
        _dns.Mx("ttl.test", (10, "mx.ttl.test")).A("mx.ttl.test", "192.0.2.1").Ttl("ttl.test", 60).Ttl("mx.ttl.test", 600);
        var router = Router();

        var first = await router.ResolveAsync("ttl.test");
        _now += 59_000;
        Assert.True(router.TryResolveCached("ttl.test"u8, out var cached));
        Assert.Same(first, cached);
        Assert.Same(first, await router.ResolveAsync("ttl.test"));
        Assert.Equal(1, _dns.Queries("ttl.test", "MX"));

        _now += 2_000; // past the MX record's 60 s
        Assert.False(router.TryResolveCached("ttl.test"u8, out _));
        await router.ResolveAsync("TTL.test");
        Assert.Equal(2, _dns.Queries("ttl.test", "MX"));
        Assert.Equal(1, _dns.Queries("mx.ttl.test", "A")); // the host's own 600 s still holds
    }

    [Fact]
    public async Task Negative_answers_are_cached_for_the_soa_minimum()
    {
        _dns.NegativeTtl = 30;
        var router = Router();

        await router.ResolveAsync("nowhere.test");
        _now += 29_000;
        await router.ResolveAsync("nowhere.test");
        Assert.Equal(1, _dns.Queries("nowhere.test", "MX"));

        _now += 2_000;
        await router.ResolveAsync("nowhere.test");
        Assert.Equal(2, _dns.Queries("nowhere.test", "MX"));
    }

    [Fact]
    public async Task Transient_failures_are_remembered_only_briefly()
    {
        _dns.ServFail("flaky.test");
        var router = Router();

        await router.ResolveAsync("flaky.test");
        _dns.ServFail("flaky.test", false);
        _dns.Mx("flaky.test", (10, "mx.flaky.test")).A("mx.flaky.test", "192.0.2.1");
        Assert.True((await router.ResolveAsync("flaky.test")).Failure.IsTransient);

        _now += 6_000;
        Assert.NotNull((await router.ResolveAsync("flaky.test")).Route);
    }

    [Fact]
    public async Task Concurrent_lookups_of_one_domain_share_one_query()
    {
        _dns.Mx("burst.test", (10, "mx.burst.test")).A("mx.burst.test", "192.0.2.1");
        var router = Router();

        var results = await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => router.ResolveAsync("burst.test").AsTask()));

        Assert.All(results, r => Assert.Same(results[0], r));
        Assert.Equal(1, _dns.Queries("burst.test", "MX"));
        Assert.Equal(1, _dns.Queries("mx.burst.test", "A"));
    }

    [Fact]
    public async Task The_cache_is_bounded()
    {
        var router = Router(o => o.Routing.DnsCacheSize = 16);

        for (int i = 0; i < 100; i++)
            await router.ResolveAsync($"d{i}.test");

        Assert.InRange(router.CachedDomains, 1, 17);
    }

    [Fact]
    public async Task Domains_with_the_same_mx_hosts_share_a_destination_key()
    {
        _dns.Mx("one.test", (10, "mx.shared.test")).Mx("two.test", (50, "MX.Shared.Test.")).A("mx.shared.test", "192.0.2.1")
            .Mx("three.test", (10, "mx.shared.test"), (20, "backup.test")).A("backup.test", "192.0.2.2");
        var router = Router();

        var one = (await router.ResolveAsync("one.test")).Route!;
        var two = (await router.ResolveAsync("two.test")).Route!;
        var three = (await router.ResolveAsync("three.test")).Route!;

        Assert.Equal(one.Key, two.Key);
        Assert.NotEqual(one.Key, three.Key);
        Assert.Equal(1, _dns.Queries("mx.shared.test", "A"));
    }

    [Fact]
    public async Task This_relay_and_worse_mx_hosts_are_dropped()
    {
        _dns.Mx("backup.test", (10, "primary.test"), (20, "relay.test"), (30, "worse.test"))
            .A("primary.test", "192.0.2.1").A("relay.test", "192.0.2.2").A("worse.test", "192.0.2.3")
            .Mx("mine.test", (10, "relay.test")).A("relay.test", "192.0.2.2");
        var router = Router();

        var backup = (await router.ResolveAsync("backup.test")).Route!;
        var mine = await router.ResolveAsync("mine.test");

        Assert.Equal(["primary.test"], backup.Hosts.Select(h => h.Name));
        Assert.Null(mine.Route);
        Assert.StartsWith("5.4.6", mine.Failure.Text);
    }

    [Fact]
    public async Task Static_routes_win_over_mx_exact_then_longest_wildcard_then_smarthost()
    {
        _dns.A("smart.test", "192.0.2.50");
        var router = Router(o =>
        {
            o.Routing.Routes["exact.test"] = new RouteOptions { Hosts = ["192.0.2.10:2600", "[2001:db8::10]:2601"] };
            o.Routing.Routes["*.corp.test"] = new RouteOptions { Hosts = ["192.0.2.20"] };
            o.Routing.Routes["*.deep.corp.test"] = new RouteOptions { Hosts = ["192.0.2.30"], Tls = "required", Connections = 2 };
            o.Routing.Routes["local.test"] = new RouteOptions { Local = true };
            o.Routing.Routes["*"] = new RouteOptions { Hosts = ["smart.test:587"] };
        });

        var exact = (await router.ResolveAsync("exact.test")).Route!;
        Assert.Equal(["192.0.2.10", "2001:db8::10"], exact.Hosts.Select(h => h.Name));
        Assert.Equal([2600, 2601], exact.Hosts.Select(h => h.Port));
        Assert.Equal("192.0.2.20", (await router.ResolveAsync("a.corp.test")).Route!.Hosts[0].Name);
        var deep = (await router.ResolveAsync("x.y.deep.corp.test")).Route!;
        Assert.Equal("192.0.2.30", deep.Hosts[0].Name);
        Assert.Equal(TlsPolicy.Required, deep.Tls);
        Assert.Equal(2, deep.MaxConnections);
        Assert.Equal(RouteKind.Local, (await router.ResolveAsync("local.test")).Route!.Kind);
        var smart = (await router.ResolveAsync("anything.example")).Route!;
        Assert.Equal(("smart.test", 587), (smart.Hosts[0].Name, smart.Hosts[0].Port));
        Assert.Equal([IPAddress.Parse("192.0.2.50")], smart.Hosts[0].Addresses);
        Assert.Equal(0, _dns.Queries("anything.example", "MX"));
        // The apex of a wildcard is not covered by it: "corp.test" falls through to the smarthost.
        Assert.Equal("smart.test", (await router.ResolveAsync("corp.test")).Route!.Hosts[0].Name);
    }

    [Fact]
    public async Task A_route_without_hosts_changes_the_policy_of_mx_delivery()
    {
        _dns.Mx("secure.test", (10, "mx.secure.test")).A("mx.secure.test", "192.0.2.1");
        var router = Router(o => o.Routing.Routes["secure.test"] = new RouteOptions { Tls = "required", MaxMessagesPerSecond = 5 });

        var route = (await router.ResolveAsync("secure.test")).Route!;

        Assert.Equal(TlsPolicy.Required, route.Tls);
        Assert.Equal(5, route.MaxMessagesPerSecond);
        Assert.Equal("mx.secure.test", route.Hosts[0].Name);
        Assert.Contains("|tls=required", route.Key);
    }

    [Fact]
    public async Task Address_literals_are_delivered_directly_only_when_allowed()
    {
        var allowed = Router(o => o.Routing.AllowAddressLiterals = true);
        var refused = Router();

        var v4 = (await allowed.ResolveAsync("[192.0.2.7]")).Route!;
        var v6 = (await allowed.ResolveAsync("[IPv6:2001:db8::7]")).Route!;
        var no = await refused.ResolveAsync("[192.0.2.7]");
        var bad = await allowed.ResolveAsync("[192.0.2]");

        Assert.Equal([IPAddress.Parse("192.0.2.7")], v4.Hosts[0].Addresses);
        Assert.Equal([IPAddress.Parse("2001:db8::7")], v6.Hosts[0].Addresses);
        Assert.Equal(550, no.Failure.Code);
        Assert.StartsWith("5.7.1", no.Failure.Text);
        Assert.Equal(550, bad.Failure.Code);
        Assert.Equal(0, _dns.TotalQueries);
    }

    [Theory]
    [InlineData("[192.0.2.1]", true)]
    [InlineData("[IPv6:::1]", true)]
    [InlineData("[ipv6:2001:db8::1]", true)]
    [InlineData("[1.2.3]", false)]
    [InlineData("[2001:db8::1]", false)]
    [InlineData("[IPv6:192.0.2.1]", false)]
    [InlineData("192.0.2.1", false)]
    public void Address_literal_syntax(string literal, bool valid) =>
        Assert.Equal(valid, NativeRelay.Routing.Router.TryParseAddressLiteral(literal, out _));

    [Fact]
    public async Task Internationalized_domains_are_looked_up_as_a_labels()
    {
        _dns.Mx("xn--bcher-kva.test", (10, "mx.books.test")).A("mx.books.test", "192.0.2.1");

        var route = (await Router().ResolveAsync("bücher.test")).Route!;

        Assert.Equal("mx.books.test", route.Hosts[0].Name);
        Assert.Equal(1, _dns.Queries("xn--bcher-kva.test", "MX"));
    }

    [Theory]
    [InlineData("delivery.tlsPolicy", "sometimes")]
    [InlineData("routing.dns", "not-an-ip")]
    [InlineData("routing.remotePort", "0")]
    [InlineData("route host", "bad host!:25")]
    [InlineData("relayTo and *", "")]
    public void Bad_routing_options_are_refused_with_one_line(string what, string value)
    {
        var options = new RelayOptions { Hostname = "relay.test", Listen = ["127.0.0.1:2525"], Spool = "/tmp/unused-spool" };
        switch (what)
        {
            case "delivery.tlsPolicy": options.Delivery.TlsPolicy = value; break;
            case "routing.dns": options.Routing.Dns = [value]; break;
            case "routing.remotePort": options.Routing.RemotePort = int.Parse(value); break;
            case "route host": options.Routing.Routes["x.test"] = new RouteOptions { Hosts = [value] }; break;
            default:
                options.RelayTo = "192.0.2.1:25";
                options.Routing.Routes["*"] = new RouteOptions { Hosts = ["192.0.2.2"] };
                break;
        }
        var e = Assert.Throws<ConfigException>(() => RelaySettings.Validate(options));
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Relay_to_becomes_the_smarthost_route()
    {
        var options = new RelayOptions { Hostname = "relay.test", Listen = ["127.0.0.1:2525"], Spool = "/tmp/unused-spool", RelayTo = "192.0.2.1:2526" };
        var settings = RelaySettings.Validate(options);

        var route = settings.Routing.Routes.Find("anything.example");

        Assert.NotNull(route);
        Assert.Equal(new RouteHostSpec("192.0.2.1", 2526), Assert.Single(route.Hosts));
    }
}
