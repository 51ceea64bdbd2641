using NativeRelay.Config;
using NativeRelay.Hosting;
using NativeRelay.Net;
using NativeRelay.Routing;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// What a configuration needs from the machine (OpenSSL, DNS servers), checked at start with one
/// line. The runs in roots without these files are in EndToEnd/FootprintTests.
/// </summary>
public sealed class StartupChecksTests
{
    private static RelaySettings Settings(Action<RelayOptions>? change = null)
    {
        var options = new RelayOptions { Hostname = "relay.test", Listen = ["127.0.0.1:2525"], Spool = "/tmp/unused-spool" };
        change?.Invoke(options);
        return RelaySettings.Validate(options);
    }

    private static string? Fails(string what) => throw new Xunit.Sdk.XunitException($"{what} should not have been probed");

    [Theory]
    [InlineData(null, false)]                    // MX for everything
    [InlineData("192.0.2.1:25", true)]           // a smarthost by address: no DNS at all
    [InlineData("[2001:db8::1]:2525", true)]
    [InlineData("smarthost.example.net:25", false)] // a smarthost by name: its addresses come from DNS
    public void Relay_to_an_address_needs_no_dns(string? relayTo, bool noDns)
    {
        var s = Settings(o => o.RelayTo = relayTo);
        Assert.Equal(!noDns, StartupChecks.NeedsDns(s.Routing));
    }

    [Fact]
    public void Static_routes_need_dns_only_for_names_mx_overrides_and_what_no_route_takes()
    {
        RoutingSettings Routes(params (string Pattern, RouteOptions Route)[] routes) => Settings(o =>
        {
            foreach (var (p, r) in routes)
                o.Routing.Routes[p] = r;
        }).Routing;

        Assert.False(StartupChecks.NeedsDns(Routes(("*", new RouteOptions { Hosts = ["10.0.0.1:25"] }), ("example.com", new RouteOptions { Hosts = ["10.0.0.2"] }))));
        Assert.False(StartupChecks.NeedsDns(Routes(("*", new RouteOptions { Local = true }))));
        // No "*": other domains go to MX.
        Assert.True(StartupChecks.NeedsDns(Routes(("example.com", new RouteOptions { Hosts = ["10.0.0.2"] }))));
        // A route without hosts is MX with overrides.
        Assert.True(StartupChecks.NeedsDns(Routes(("*", new RouteOptions { Hosts = ["10.0.0.1"] }), ("example.com", new RouteOptions { Connections = 2 }))));
        // A host name.
        Assert.True(StartupChecks.NeedsDns(Routes(("*", new RouteOptions { Hosts = ["10.0.0.1"] }), ("example.com", new RouteOptions { Hosts = ["mx.example.com"] }))));
    }

    [Fact]
    public void No_dns_servers_is_one_line_only_where_dns_is_needed()
    {
        const string problem = "no DNS servers: /etc/resolv.conf is missing; give --dns IP[:PORT] or routing.dns";
        var e = Assert.Throws<ConfigException>(() => StartupChecks.Check(Settings(), () => null, () => problem, () => "/home"));
        Assert.Equal(problem, e.Message);

        // A smarthost by address, or servers given: the system's are never looked for.
        StartupChecks.Check(Settings(o => o.RelayTo = "192.0.2.1:25"), () => null, () => Fails("DNS"), () => "/home");
        StartupChecks.Check(Settings(o => o.Routing.Dns = ["192.0.2.53"]), () => null, () => Fails("DNS"), () => "/home");
    }

    [Fact]
    public void Tls_configured_without_openssl_is_refused_with_the_file_and_the_package()
    {
        using var dir = new TempDir();
        string cert = dir.File("cert.pem"), key = dir.File("key.pem");
        File.WriteAllText(cert, "");
        File.WriteAllText(key, "");
        Func<string?> missing = () => "libssl.so.3 is missing";

        var e = Assert.Throws<ConfigException>(() => StartupChecks.Check(Settings(o => { o.Tls.Certificate = cert; o.Tls.Key = key; }), missing, () => null, () => "/home"));
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith("tls.certificate needs OpenSSL 3, which cannot be loaded: libssl.so.3 is missing", e.Message);
        Assert.Contains("libssl3 on Debian", e.Message);
        Assert.Contains("openssl on Alpine", e.Message);

        e = Assert.Throws<ConfigException>(() => StartupChecks.Check(Settings(o => o.Delivery.TlsPolicy = "required"), missing, () => null, () => "/home"));
        Assert.StartsWith("delivery.tlsPolicy \"required\" needs OpenSSL 3", e.Message);
        e = Assert.Throws<ConfigException>(() => StartupChecks.Check(Settings(o => o.Routing.Routes["example.com"] = new RouteOptions { Tls = "required" }), missing, () => null, () => "/home"));
        Assert.StartsWith("routing.routes[\"example.com\"].tls \"required\" needs OpenSSL 3", e.Message);

        // OpenSSL there, but no home directory for .NET's certificate stores.
        e = Assert.Throws<ConfigException>(() => StartupChecks.Check(Settings(o => { o.Tls.Certificate = cert; o.Tls.Key = key; }), () => null, () => null, () => ""));
        Assert.StartsWith("tls.certificate: the relay's user has no home directory (HOME is unset and /etc/passwd has no entry for uid ", e.Message);

        // Without TLS configured (opportunistic STARTTLS is then skipped) the relay starts as before.
        StartupChecks.Check(Settings(), missing, () => null, () => "");
        StartupChecks.Check(Settings(o => o.Delivery.TlsPolicy = "none"), () => Fails("OpenSSL"), () => null, () => "/home");
    }

    /// <summary>A change to the options that turns on a feature needing OpenSSL, and the option the refusal names.</summary>
    public static TheoryData<string, string> OpenSslFeatures() => new()
    {
        { "dane", "outboundTls.dane (on, with routing.dnssec)" },
        { "dkim", "dkim.keys" },
        { "inboundAuth", "inboundAuth.mode \"annotate\"" },
        { "listenerInboundAuth", "listeners[127.0.0.1:2526].inboundAuth \"enforce\"" },
        { "usersFile", "usersFile" },
        { "http", "http.listen" },
        { "webhook", "events.webhooks" },
        { "cluster", "cluster.redis" },
    };

    private static void TurnOn(RelayOptions o, string feature)
    {
        switch (feature)
        {
            case "dane": o.Routing.Dnssec = true; break;
            case "dkim": o.Dkim.Keys.Add(new DkimKeyOptions { Domain = "example.com", Selector = "s1", KeyFile = "/nonexistent/s1.pem" }); break;
            case "inboundAuth": o.InboundAuth.Mode = "annotate"; break;
            case "listenerInboundAuth": o.Listeners.Add(new ListenerOptions { Address = "127.0.0.1:2526", InboundAuth = "enforce" }); break;
            case "usersFile": o.UsersFile = "/nonexistent/users"; break;
            case "http": o.Http = new HttpOptions { Listen = "127.0.0.1:8080", TokensFile = "/nonexistent/tokens" }; break;
            case "webhook": o.Events.Webhooks.Add(new WebhookOptions { Url = "https://hooks.example.net/relay", SecretFile = "/nonexistent/secret" }); break;
            case "cluster": o.Cluster.Redis = "127.0.0.1:6379"; break;
            default: throw new ArgumentException(feature);
        }
    }

    [Theory]
    [MemberData(nameof(OpenSslFeatures))]
    public void A_feature_that_needs_openssl_is_refused_without_it_in_one_line_naming_the_option(string feature, string option)
    {
        // A smarthost by address: nothing else (DNS) is asked of the machine.
        var settings = Settings(o => { o.RelayTo = "192.0.2.1:25"; TurnOn(o, feature); });
        Assert.Equal(option, StartupChecks.OpenSslNeededBy(settings));

        var e = Assert.Throws<ConfigException>(() => StartupChecks.Check(settings, () => "libcrypto.so.3 is missing", () => null, () => "/home"));
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith($"{option} needs OpenSSL 3, which cannot be loaded: libcrypto.so.3 is missing (install libssl3 on Debian/Ubuntu", e.Message);
        // check-config and a reload read keys, users and tokens only after this check.
        e = Assert.Throws<ConfigException>(() => StartupChecks.CheckOpenSsl(settings, () => "libssl.so.3 is missing"));
        Assert.StartsWith($"{option} needs OpenSSL 3, which cannot be loaded: libssl.so.3 is missing", e.Message);

        // With OpenSSL the same configuration passes.
        StartupChecks.Check(settings, () => null, () => null, () => "/home");
    }

    [Fact]
    public void Without_those_features_nothing_needs_openssl_and_dane_off_lifts_the_dnssec_refusal()
    {
        Assert.Null(StartupChecks.OpenSslNeededBy(Settings()));
        // DANE is on by default but takes effect only with routing.dnssec; turned off, dnssec alone needs no OpenSSL.
        Assert.Equal("outboundTls.dane (on, with routing.dnssec)", StartupChecks.OpenSslNeededBy(Settings(o => o.Routing.Dnssec = true)));
        Assert.Null(StartupChecks.OpenSslNeededBy(Settings(o => { o.Routing.Dnssec = true; o.OutboundTls.Dane = false; })));
        Assert.Null(StartupChecks.OpenSslNeededBy(Settings(o => o.InboundAuth.Mode = "off")));
        StartupChecks.Check(Settings(o => { o.RelayTo = "192.0.2.1:25"; o.Routing.Dnssec = true; o.OutboundTls.Dane = false; }),
            () => "libssl.so.3 is missing", () => null, () => "");
    }

    [Fact]
    public void A_webhooks_default_name_is_still_its_urls_sha256_though_validation_no_longer_uses_dotnets()
    {
        // Validation runs before the OpenSSL check, so the name's SHA-256 is BouncyCastle's; the
        // names key the cursor files, so they must stay what .NET's SHA-256 made them.
        const string url = "https://hooks.example.net/relay?x=1";
        var settings = Settings(o => o.Events.Webhooks.Add(new WebhookOptions { Url = url, SecretFile = "/nonexistent/secret" }));
        string expected = "hooks.example.net-" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(new Uri(url).AbsoluteUri)), 0, 4);
        Assert.Equal(expected, Assert.Single(settings.Events.Webhooks).Name);
    }

    [Fact]
    public void Mta_sts_on_by_default_is_skipped_without_openssl_with_one_warning_not_refused()
    {
        const string missing = "libssl.so.3 is missing";
        var settings = Settings();
        Assert.True(settings.Routing.MtaSts);
        Assert.True(StartupChecks.FetchesMtaSts(settings.Routing, null));
        Assert.False(StartupChecks.FetchesMtaSts(settings.Routing, missing));
        Assert.False(StartupChecks.FetchesMtaSts(Settings(o => o.OutboundTls.MtaSts = false).Routing, null));

        // Not refused: the relay starts (MX delivery, so DNS is asked for; the servers are given).
        StartupChecks.Check(Settings(o => o.Routing.Dns = ["192.0.2.53"]), () => missing, () => Fails("DNS"), () => "");

        // Said once at start, with the reason; nothing said when OpenSSL is there.
        Assert.Empty(StartupChecks.Warnings(settings, null));
        var warnings = StartupChecks.Warnings(settings, missing);
        var sts = Assert.Single(warnings, w => w.StartsWith("MTA-STS:", StringComparison.Ordinal));
        Assert.StartsWith("MTA-STS: off, OpenSSL 3 cannot be loaded (libssl.so.3 is missing): recipient domains' policies are not fetched", sts);
        Assert.Contains(warnings, w => w.Contains("STARTTLS to next hops is not attempted", StringComparison.Ordinal));
        Assert.All(warnings, w => Assert.DoesNotContain('\n', w));
        // Turned off by the operator: no MTA-STS line.
        Assert.DoesNotContain(StartupChecks.Warnings(Settings(o => o.OutboundTls.MtaSts = false), missing), w => w.StartsWith("MTA-STS:", StringComparison.Ordinal));
        // TLS-RPT's daily sending skips https: addresses, and says so.
        Assert.DoesNotContain(warnings, w => w.StartsWith("TLS-RPT:", StringComparison.Ordinal));
        Assert.Contains(StartupChecks.Warnings(Settings(o => o.TlsRpt.SendDaily = true), missing),
            w => w.StartsWith("TLS-RPT: OpenSSL 3 cannot be loaded (libssl.so.3 is missing): reports are not sent to https: addresses", StringComparison.Ordinal));
    }

    [Fact]
    public void The_mta_sts_warning_is_only_for_a_relay_where_some_mail_goes_by_mx()
    {
        const string missing = "libcrypto.so.3 is missing";
        static bool WarnsMtaSts(RelaySettings s) => StartupChecks.Warnings(s, missing).Any(w => w.StartsWith("MTA-STS:", StringComparison.Ordinal));

        // A smarthost takes every domain (MTA-STS applies to MX delivery only): nothing is skipped,
        // but STARTTLS to the smarthost still is, and that is said.
        var smarthost = Settings(o => o.RelayTo = "192.0.2.1:25");
        Assert.False(StartupChecks.DeliversByMx(smarthost.Routing));
        Assert.False(WarnsMtaSts(smarthost));
        Assert.Contains(StartupChecks.Warnings(smarthost, missing), w => w.Contains("STARTTLS to next hops is not attempted", StringComparison.Ordinal));
        Assert.False(WarnsMtaSts(Settings(o => o.RelayTo = "smarthost.example.net:25"))); // by name: A lookup, not MX
        Assert.False(WarnsMtaSts(Settings(o => o.Routing.Routes["*"] = new RouteOptions { Hosts = ["10.0.0.1", "smarthost.example.net"] })));
        Assert.False(WarnsMtaSts(Settings(o => o.Routing.Routes["*"] = new RouteOptions { Local = true })));
        Assert.False(WarnsMtaSts(Settings(o =>
        {
            o.Routing.Routes["*"] = new RouteOptions { Hosts = ["10.0.0.1"] };
            o.Routing.Routes["example.com"] = new RouteOptions { Hosts = ["mx.partner.test"] };
        })));

        // Some mail goes by MX: the default, a domain no route takes, a route that only overrides.
        Assert.True(WarnsMtaSts(Settings()));
        Assert.True(WarnsMtaSts(Settings(o => o.Routing.Routes["example.com"] = new RouteOptions { Hosts = ["10.0.0.2"] })));
        Assert.True(WarnsMtaSts(Settings(o =>
        {
            o.RelayTo = "192.0.2.1:25";
            o.Routing.Routes["example.com"] = new RouteOptions { Connections = 2 };
        })));
    }

    [Fact]
    public void The_probe_names_the_missing_file()
    {
        static OpenSslLibrary.TryLoad Having(params string[] files) => (string name, out IntPtr handle) =>
        {
            handle = files.Contains(name) ? 1 : 0;
            return handle != 0;
        };
        Assert.Null(OpenSslLibrary.Probe(Having("libcrypto.so.3", "libssl.so.3"), null));
        Assert.Null(OpenSslLibrary.Probe(Having("libssl.so.1.1"), null));
        Assert.Null(OpenSslLibrary.Probe(Having("libssl.so.3.5"), "3.5"));
        Assert.Equal("libcrypto.so.3 is missing", OpenSslLibrary.Probe(Having(), null));
        Assert.Equal("libssl.so.3 is missing", OpenSslLibrary.Probe(Having("libcrypto.so.3"), null));
        // The test machine has OpenSSL 3 (the TLS tests use it).
        Assert.True(OpenSslLibrary.IsAvailable, OpenSslLibrary.Problem);
    }
}

/// <summary>The system's DNS servers are the nameserver lines of resolv.conf, read by the relay itself.</summary>
public sealed class SystemDnsServersTests
{
    [Fact]
    public void Nameserver_lines_are_the_servers()
    {
        using var dir = new TempDir();
        string file = dir.File("resolv.conf");
        File.WriteAllText(file, "# generated\nsearch example.com\nnameserver 192.0.2.53\n\tnameserver\t2001:db8::53 \noptions ndots:2\nnameserver not-an-address\n");
        var servers = DnsClientResolver.SystemServers(file, out string? problem);
        Assert.Null(problem);
        Assert.Equal(["192.0.2.53:53", "[2001:db8::53]:53"], servers!.Select(s => s.ToString()));
    }

    [Fact]
    public async Task A_missing_or_empty_resolv_conf_is_one_line_and_lookups_fail_transiently_with_it()
    {
        using var dir = new TempDir();
        string file = dir.File("resolv.conf");
        Assert.Equal($"no DNS servers: {file} is missing; give --dns IP[:PORT] or routing.dns", DnsClientResolver.SystemServersProblem(file));
        Assert.Equal($"no DNS servers: {dir.File("etc")}/resolv.conf is missing; give --dns IP[:PORT] or routing.dns", DnsClientResolver.SystemServersProblem(dir.File("etc") + "/resolv.conf"));

        // Made without servers and without the file: no exception until a lookup, which is TempFail.
        var resolver = new DnsClientResolver([], TimeSpan.FromSeconds(1), file);
        var mx = await resolver.QueryMxAsync("example.com", CancellationToken.None);
        Assert.Equal(DnsStatus.TempFail, mx.Status);
        Assert.Contains("is missing", mx.Error);
        var a = await resolver.QueryAddressesAsync("mx.example.com", CancellationToken.None);
        Assert.Equal(DnsStatus.TempFail, a.Status);

        File.WriteAllText(file, "search example.com\n");
        Assert.Equal($"no DNS servers: {file} names none; give --dns IP[:PORT] or routing.dns", DnsClientResolver.SystemServersProblem(file));
    }
}

/// <summary>Random bytes without OpenSSL (RandomNumberGenerator is OpenSSL's on Linux) or /dev/urandom: getrandom(2).</summary>
public sealed class KernelRandomTests
{
    [Fact]
    public void Any_length_is_filled_from_the_kernel_and_two_draws_differ()
    {
        var a = NativeRelay.Interop.KernelRandom.GetBytes(4096);
        var b = NativeRelay.Interop.KernelRandom.GetBytes(4096);
        Assert.False(a.AsSpan().SequenceEqual(b));
        // 4096 random bytes take nearly all 256 values (a buffer left unfilled would be zeros).
        Assert.True(a.Distinct().Count() > 200);
        Assert.True(b.Distinct().Count() > 200);
        Assert.Empty(NativeRelay.Interop.KernelRandom.GetBytes(0));
    }
}
