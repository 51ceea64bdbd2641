using System.Globalization;
using System.Net;
using NativeRelay.Config;

namespace NativeRelay.Routing;

/// <summary>STARTTLS towards a next hop.</summary>
public enum TlsPolicy : byte
{
    /// <summary>Never start TLS.</summary>
    None,
    /// <summary>Start TLS when the peer offers it; if the handshake fails, deliver in plain text on a new connection.</summary>
    Opportunistic,
    /// <summary>Deliver only over TLS; a peer without STARTTLS (or a failed handshake) is a transient failure. The certificate is not verified.</summary>
    Required,
    /// <summary>
    /// Deliver only over TLS with a certificate that chains to the system's trust store or the
    /// configured CA bundle and names the next hop (RFC 6125); anything less fails the connection
    /// (next MX, then defer). Ordered after <see cref="Required"/>: every check of "at least required" holds for it.
    /// </summary>
    Verify,
}

/// <summary>A configured next hop of a static route.</summary>
public sealed record RouteHostSpec(string Host, int Port);

/// <summary>A validated static route.</summary>
public sealed class StaticRoute
{
    public required string Pattern { get; init; }
    public IReadOnlyList<RouteHostSpec> Hosts { get; init; } = [];
    public bool Local { get; init; }
    public TlsPolicy? Tls { get; init; }
    public int? Connections { get; init; }
    public double? MaxMessagesPerSecond { get; init; }

    /// <summary>True when the route names its own next hops (otherwise MX is used, with the overrides).</summary>
    public bool HasHosts => Hosts.Count > 0;
}

/// <summary>
/// The validated routing, bounce and delivery-log options (built once at start; see docs/CONFIG.md).
/// </summary>
public sealed class RoutingSettings
{
    public IReadOnlyList<IPEndPoint> DnsServers { get; init; } = [];
    /// <summary>routing.dnssec: the DNS servers validate, their AD bit is trusted (DANE needs it).</summary>
    public bool Dnssec { get; init; }
    /// <summary>DANE (RFC 7672) for MX hosts whose TLSA records validate; effective only with <see cref="Dnssec"/>.</summary>
    public bool Dane { get; init; } = true;
    /// <summary>MTA-STS (RFC 8461) for MX routes: outboundTls.mtaSts (on by default; serve --no-mta-sts).</summary>
    public bool MtaSts { get; init; } = true;
    /// <summary>The port policy hosts are fetched from (outboundTls.mtaStsPort: 443; other values are for tests).</summary>
    public int MtaStsPort { get; init; } = 443;
    /// <summary>How long one policy fetch may take (outboundTls.mtaStsFetchTimeoutSeconds).</summary>
    public TimeSpan MtaStsFetchTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>TLS-RPT (RFC 8460): record outcomes for domains that publish "_smtp._tls" (tlsRpt.enabled).</summary>
    public bool TlsRpt { get; init; } = true;
    /// <summary>tlsRpt.sendDaily: the relay sends the reports of finished days itself.</summary>
    public bool TlsRptSendDaily { get; init; }
    /// <summary>tlsRpt.organizationName and contactInfo (null: derived from the host name).</summary>
    public string? TlsRptOrganization { get; init; }
    public string? TlsRptContact { get; init; }
    /// <summary>The spool directory: MTA-STS policies are cached in SPOOL/mta-sts, TLS-RPT counts kept in SPOOL/tls-rpt.</summary>
    public string? SpoolDirectory { get; init; }
    public string? MtaStsDirectory => SpoolDirectory is null ? null : Path.Combine(SpoolDirectory, "mta-sts");
    public string? TlsRptDirectory => SpoolDirectory is null ? null : Path.Combine(SpoolDirectory, "tls-rpt");
    public int RemotePort { get; init; } = 25;
    public TimeSpan DnsTimeout { get; init; } = TimeSpan.FromSeconds(5);
    public int DnsCacheSize { get; init; } = 10_000;
    public bool AllowAddressLiterals { get; init; }
    public TlsPolicy DefaultTls { get; init; } = TlsPolicy.Opportunistic;

    /// <summary>Extra trust anchors (outboundTls.caFile) beside the system store, for the verify policy; null: the system store only.</summary>
    public NativeRelay.TlsPolicies.TrustAnchors? TrustAnchors { get; init; }
    public double DefaultMaxMessagesPerSecond { get; init; }
    public StaticRouteTable Routes { get; init; } = StaticRouteTable.Empty;

    /// <summary>Where the JSON delivery log goes: a full path, "-" for standard output, or null for off.</summary>
    public string? DeliveryLogPath { get; init; }

    public long ReturnFullMaxBytes { get; init; } = 100 * 1024;

    /// <summary>Null: no delay warnings.</summary>
    public TimeSpan? DelayWarning { get; init; }

    public static RoutingSettings Default { get; } = new();

    /// <summary>Checks the routing, bounce and delivery-log options; every problem is a one-line <see cref="ConfigException"/>.</summary>
    public static RoutingSettings Validate(RelayOptions o, string spoolDirectory)
    {
        var r = o.Routing ?? new RoutingOptions();
        if (r.RemotePort is <= 0 or > 65535)
            throw new ConfigException($"routing.remotePort: 1 to 65535 (got {r.RemotePort})");
        if (r.DnsTimeoutSeconds is <= 0 or > 120)
            throw new ConfigException($"routing.dnsTimeoutSeconds: 1 to 120 (got {r.DnsTimeoutSeconds})");
        if (r.DnsCacheSize is < 16 or > 10_000_000)
            throw new ConfigException($"routing.dnsCacheSize: 16 to 10000000 (got {r.DnsCacheSize})");

        var dns = new List<IPEndPoint>();
        foreach (var text in r.Dns ?? [])
            dns.Add(ParseDnsServer(text, "routing.dns"));

        var d = o.Delivery;
        var tls = ParseTls(d.TlsPolicy, "delivery.tlsPolicy");
        var caFile = o.OutboundTls?.CaFile;
        // Reading certificates loads OpenSSL, whose shim aborts the process when it is missing: ask first.
        if (!string.IsNullOrEmpty(caFile) && NativeRelay.Net.OpenSslLibrary.Problem is { } noSsl)
            throw new ConfigException(NativeRelay.Net.OpenSslLibrary.Refusal("outboundTls.caFile", noSsl));
        var anchors = string.IsNullOrEmpty(caFile) ? null : NativeRelay.TlsPolicies.TrustAnchors.Load(caFile, "outboundTls.caFile");
        var outbound = o.OutboundTls ?? new OutboundTlsOptions();
        if (outbound.MtaStsPort is <= 0 or > 65535)
            throw new ConfigException($"outboundTls.mtaStsPort: 1 to 65535 (got {outbound.MtaStsPort})");
        if (outbound.MtaStsFetchTimeoutSeconds is <= 0 or > 300)
            throw new ConfigException($"outboundTls.mtaStsFetchTimeoutSeconds: 1 to 300 (got {outbound.MtaStsFetchTimeoutSeconds})");
        if (!(d.MaxMessagesPerSecond >= 0) || double.IsInfinity(d.MaxMessagesPerSecond))
            throw new ConfigException("delivery.maxMessagesPerSecond must be 0 (no limit) or positive");

        var routes = new List<StaticRoute>();
        foreach (var (key, value) in r.Routes ?? new())
            routes.Add(ParseRoute(key, value, r.RemotePort));
        if (o.RelayTo is not null)
        {
            foreach (var route in routes)
                if (route.Pattern == "*")
                    throw new ConfigException("relayTo and routing.routes[\"*\"] both name a smarthost; keep one");
            var hop = NextHop.Parse(o.RelayTo, "relayTo");
            routes.Add(new StaticRoute { Pattern = "*", Hosts = [new RouteHostSpec(hop.Host, hop.Port)] });
        }

        var b = o.Bounces ?? new BounceOptions();
        if (b.ReturnFullMaxBytes < 0)
            throw new ConfigException("bounces.returnFullMaxBytes must not be negative");
        if (!(b.DelayWarningHours >= 0) || double.IsInfinity(b.DelayWarningHours))
            throw new ConfigException("bounces.delayWarningHours must be 0 (off) or positive");

        string? logPath = d.LogFile switch
        {
            null or "" => Path.Combine(spoolDirectory, "delivery.log"),
            "none" => null,
            "-" => "-",
            var path => Path.GetFullPath(path),
        };

        return new RoutingSettings
        {
            DnsServers = dns,
            Dnssec = r.Dnssec,
            Dane = outbound.Dane,
            MtaSts = outbound.MtaSts,
            MtaStsPort = outbound.MtaStsPort,
            MtaStsFetchTimeout = TimeSpan.FromSeconds(outbound.MtaStsFetchTimeoutSeconds),
            TlsRpt = o.TlsRpt?.Enabled ?? true,
            TlsRptSendDaily = o.TlsRpt?.SendDaily ?? false,
            TlsRptOrganization = o.TlsRpt?.OrganizationName,
            TlsRptContact = o.TlsRpt?.ContactInfo,
            SpoolDirectory = spoolDirectory,
            RemotePort = r.RemotePort,
            DnsTimeout = TimeSpan.FromSeconds(r.DnsTimeoutSeconds),
            DnsCacheSize = r.DnsCacheSize,
            AllowAddressLiterals = r.AllowAddressLiterals,
            DefaultTls = tls,
            TrustAnchors = anchors,
            DefaultMaxMessagesPerSecond = d.MaxMessagesPerSecond,
            Routes = new StaticRouteTable(routes),
            DeliveryLogPath = logPath,
            ReturnFullMaxBytes = b.ReturnFullMaxBytes,
            DelayWarning = b.DelayWarningHours > 0 ? TimeSpan.FromHours(b.DelayWarningHours) : null,
        };
    }

    public static IPEndPoint ParseDnsServer(string text, string what)
    {
        if (IPAddress.TryParse(text, out var bare))
            return new IPEndPoint(bare, 53);
        if (IPEndPoint.TryParse(text, out var ep) && ep.Port != 0)
            return ep;
        throw new ConfigException($"{what}: '{text}' is not IP or IP:PORT (e.g. 127.0.0.1:53 or [::1]:5353)");
    }

    public static TlsPolicy ParseTls(string? text, string what) => text?.ToLowerInvariant() switch
    {
        "none" => TlsPolicy.None,
        "opportunistic" or "may" => TlsPolicy.Opportunistic,
        "required" or "encrypt" => TlsPolicy.Required,
        "verify" or "secure" => TlsPolicy.Verify,
        _ => throw new ConfigException($"{what}: '{text}' is not one of none, opportunistic, required, verify"),
    };

    /// <summary>The configuration's word for a policy.</summary>
    public static string TlsName(TlsPolicy tls) => tls switch
    {
        TlsPolicy.None => "none",
        TlsPolicy.Opportunistic => "opportunistic",
        TlsPolicy.Required => "required",
        _ => "verify",
    };

    private static StaticRoute ParseRoute(string pattern, RouteOptions value, int remotePort)
    {
        string what = $"routing.routes[\"{pattern}\"]";
        pattern = pattern.Trim().TrimEnd('.').ToLowerInvariant();
        if (pattern != "*")
        {
            string name = pattern.StartsWith("*.", StringComparison.Ordinal) ? pattern[2..] : pattern;
            if (!RelaySettings.IsValidHostname(name))
                throw new ConfigException($"{what}: the key must be a domain, *.domain or *");
        }
        if (value is null)
            throw new ConfigException($"{what}: a route needs hosts, local, or an override (tls, connections, maxMessagesPerSecond)");
        if (value.Local && value.Hosts.Count > 0)
            throw new ConfigException($"{what}: a route is either local or has hosts, not both");
        var hosts = new List<RouteHostSpec>();
        foreach (var h in value.Hosts)
            hosts.Add(ParseHost(h, remotePort, what));
        if (value.Connections is <= 0)
            throw new ConfigException($"{what}.connections must be positive");
        if (value.MaxMessagesPerSecond is { } rate && (!(rate >= 0) || double.IsInfinity(rate)))
            throw new ConfigException($"{what}.maxMessagesPerSecond must be 0 (no limit) or positive");
        if (pattern == "*" && !value.Local && hosts.Count == 0)
            throw new ConfigException($"{what}: the \"*\" route needs hosts (a smarthost) or local");
        return new StaticRoute
        {
            Pattern = pattern,
            Hosts = hosts,
            Local = value.Local,
            Tls = value.Tls is null ? null : ParseTls(value.Tls, what + ".tls"),
            Connections = value.Connections,
            MaxMessagesPerSecond = value.MaxMessagesPerSecond,
        };
    }

    /// <summary>HOST, HOST:PORT, IP, IP:PORT or [IPv6]:PORT; the port defaults to the remote port.</summary>
    public static RouteHostSpec ParseHost(string text, int defaultPort, string what)
    {
        text = text.Trim();
        if (IPAddress.TryParse(text, out var ip) && !text.Contains(']'))
            return new RouteHostSpec(ip.ToString(), defaultPort);
        if (IPEndPoint.TryParse(text, out var ep) && (ep.Port != 0 || text.EndsWith(":0", StringComparison.Ordinal)))
        {
            if (ep.Port == 0)
                throw new ConfigException($"{what}: port 0 in '{text}'");
            return new RouteHostSpec(ep.Address.ToString(), ep.Port);
        }
        if (text.StartsWith('[') && text.EndsWith(']') && IPAddress.TryParse(text[1..^1], out var bracketed))
            return new RouteHostSpec(bracketed.ToString(), defaultPort);
        int colon = text.LastIndexOf(':');
        string host = colon > 0 ? text[..colon] : text;
        int port = defaultPort;
        if (colon > 0 && (!int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out port) || port is <= 0 or > 65535))
            throw new ConfigException($"{what}: '{text}' is not HOST[:PORT]");
        host = host.TrimEnd('.').ToLowerInvariant();
        if (!RelaySettings.IsValidHostname(host))
            throw new ConfigException($"{what}: '{text}' is not HOST[:PORT]");
        return new RouteHostSpec(host, port);
    }
}

/// <summary>
/// Static routes by domain: an exact domain first, then the longest "*.suffix" that matches,
/// then "*". Looked up with the domain as characters, so a lookup allocates nothing.
/// </summary>
public sealed class StaticRouteTable
{
    public static StaticRouteTable Empty { get; } = new([]);

    private readonly Dictionary<string, StaticRoute> _exact = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, StaticRoute> _suffix = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, StaticRoute>.AlternateLookup<ReadOnlySpan<char>> _exactLookup;
    private readonly Dictionary<string, StaticRoute>.AlternateLookup<ReadOnlySpan<char>> _suffixLookup;
    private readonly StaticRoute? _default;

    public StaticRouteTable(IReadOnlyList<StaticRoute> routes)
    {
        foreach (var route in routes)
        {
            if (route.Pattern == "*")
                _default = route;
            else if (route.Pattern.StartsWith("*.", StringComparison.Ordinal))
                _suffix[route.Pattern[2..]] = route;
            else
                _exact[route.Pattern] = route;
        }
        _exactLookup = _exact.GetAlternateLookup<ReadOnlySpan<char>>();
        _suffixLookup = _suffix.GetAlternateLookup<ReadOnlySpan<char>>();
        All = routes;
    }

    public IReadOnlyList<StaticRoute> All { get; }

    public bool IsEmpty => All.Count == 0;

    /// <summary>The route for a domain (lower or upper case, no trailing dot), or null: use MX.</summary>
    public StaticRoute? Find(ReadOnlySpan<char> domain)
    {
        if (_exact.Count > 0 && _exactLookup.TryGetValue(domain, out var exact))
            return exact;
        if (_suffix.Count > 0)
        {
            // "a.b.example.com" tries "b.example.com", "example.com", "com": the longest first.
            var rest = domain;
            int dot;
            while ((dot = rest.IndexOf('.')) >= 0)
            {
                rest = rest[(dot + 1)..];
                if (_suffixLookup.TryGetValue(rest, out var wildcard))
                    return wildcard;
            }
        }
        return _default;
    }
}
