namespace NativeRelay.Config;

/// <summary>
/// How the next hop of a recipient domain is found: DNS (MX, then A/AAAA), static routes that
/// override it, and address literals. Validated into <see cref="Routing.RoutingSettings"/>.
/// </summary>
public sealed class RoutingOptions
{
    /// <summary>DNS servers as IP:PORT; empty means the system's resolvers (/etc/resolv.conf).</summary>
    public List<string> Dns { get; set; } = [];

    /// <summary>
    /// The DNS servers validate DNSSEC and their AD bit is trusted (as Postfix's
    /// smtp_dns_support_level = dnssec): turns DANE on. Only for a resolver on this host or a
    /// trusted network path. Default false.
    /// </summary>
    public bool Dnssec { get; set; }

    /// <summary>The TCP port of MX hosts and of route hosts given without a port.</summary>
    public int RemotePort { get; set; } = 25;

    /// <summary>One DNS query's timeout; a query is tried twice before it counts as a transient failure.</summary>
    public int DnsTimeoutSeconds { get; set; } = 5;

    /// <summary>Domains and host names whose answers are cached (each for its TTL, negative answers too).</summary>
    public int DnsCacheSize { get; set; } = 10_000;

    /// <summary>Deliver to address literals (user@[192.0.2.1], user@[IPv6:2001:db8::1]); off: they fail with 550 5.7.1.</summary>
    public bool AllowAddressLiterals { get; set; }

    /// <summary>
    /// Static routes by recipient domain: "example.com" (that domain), "*.example.com" (its
    /// subdomains; the longest match wins) or "*" (everything else: a smarthost).
    /// </summary>
    public Dictionary<string, RouteOptions> Routes { get; set; } = new();
}

/// <summary>One static route. Without hosts and without local it only changes how the domain's MX hosts are used.</summary>
public sealed class RouteOptions
{
    /// <summary>Next hops as HOST[:PORT] or IP[:PORT], tried in order; names are resolved with A/AAAA (no MX lookup).</summary>
    public List<string> Hosts { get; set; } = [];

    /// <summary>Deliver locally (handed to the local delivery agent).</summary>
    public bool Local { get; set; }

    /// <summary>TLS policy for this destination: none, opportunistic, required or verify (default: delivery.tlsPolicy).</summary>
    public string? Tls { get; set; }

    /// <summary>Connection limit for this destination (default: delivery.connectionsPerDestination).</summary>
    public int? Connections { get; set; }

    /// <summary>Rate limit for this destination in messages per second (default: delivery.maxMessagesPerSecond; 0 means none).</summary>
    public double? MaxMessagesPerSecond { get; set; }
}

/// <summary>Delivery status notifications (RFC 3464) the relay sends to envelope senders.</summary>
public sealed class BounceOptions
{
    /// <summary>
    /// Without RET (RFC 3461), a bounce returns the whole message up to this size, and only its
    /// headers above it. RET=HDRS always returns headers, RET=FULL the whole message.
    /// </summary>
    public long ReturnFullMaxBytes { get; set; } = 100 * 1024;

    /// <summary>Send one "delayed" notice when a message is still undelivered after this many hours; 0: never.</summary>
    public double DelayWarningHours { get; set; }

    /// <summary>A bounce classification rules file (JSON, docs/CONFIG.md) consulted before the shipped rules; re-read on SIGHUP.</summary>
    public string? ClassRules { get; set; }
}
