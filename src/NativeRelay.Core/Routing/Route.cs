using System.Net;
using NativeRelay.Smtp;

namespace NativeRelay.Routing;

public enum RouteKind : byte
{
    /// <summary>SMTP to the route's hosts.</summary>
    Smtp,
    /// <summary>Local delivery (handed to the local delivery agent).</summary>
    Local,
}

/// <summary>
/// Where a group of recipients goes next: a destination. <see cref="Key"/> names it: recipients
/// with the same key share a queue, connections and limits, so domains that resolve to the same
/// next-hop set (the same MX hosts, in the same preference groups, with the same policy) share
/// them too. Immutable and shared: the router caches one per domain for its TTL.
/// </summary>
public sealed class Route
{
    public Route(string key, RouteKind kind, IReadOnlyList<RouteHost> hosts, TlsPolicy tls, int? maxConnections = null,
        double maxMessagesPerSecond = 0, string? domain = null)
    {
        Domain = domain;
        Key = key;
        Kind = kind;
        Hosts = hosts;
        Tls = tls;
        MaxConnections = maxConnections;
        MaxMessagesPerSecond = maxMessagesPerSecond;
        KeyHash = (uint)StringComparer.Ordinal.GetHashCode(key);
    }

    public string Key { get; }
    public RouteKind Kind { get; }

    /// <summary>Next hops in preference order (lowest first); hosts of equal preference are shuffled per connection.</summary>
    public IReadOnlyList<RouteHost> Hosts { get; }
    public TlsPolicy Tls { get; }

    /// <summary>The route's own connection limit, or null for the configured default.</summary>
    public int? MaxConnections { get; }

    /// <summary>Messages per second at most; 0: no limit.</summary>
    public double MaxMessagesPerSecond { get; }

    /// <summary>Hash of the key (per process).</summary>
    public uint KeyHash { get; }

    /// <summary>
    /// The recipient domain whose TLS policies (MTA-STS, TLS-RPT) this route carries, or null: set
    /// only for an MX route of a domain that publishes an "_mta-sts" or "_smtp._tls" record (or
    /// has a cached MTA-STS policy), whose route is then its own destination ("|policy=DOMAIN").
    /// </summary>
    public string? PolicyDomain { get; init; }

    /// <summary>The id of the domain's valid "_mta-sts" TXT record, or null (none, or invalid).</summary>
    public string? StsRecordId { get; init; }

    /// <summary>The domain's "_smtp._tls" TXT record (TLS-RPT), or null.</summary>
    public string? TlsRptRecord { get; init; }

    /// <summary>The hosts come from an MX lookup (not a static route, relayTo or an address literal).</summary>
    public bool FromMx { get; init; }

    /// <summary>The MX answer carried the AD bit of a trusted validating resolver (routing.dnssec).</summary>
    public bool MxAuthentic { get; init; }

    /// <summary>
    /// For messages with "TLS-Required: No" (RFC 8689 5): deliver with opportunistic TLS, ignoring
    /// verify, DANE and MTA-STS. Such messages get a destination of their own ("|tls-required=no").
    /// </summary>
    public bool TlsOptional { get; init; }

    /// <summary>This route for a "TLS-Required: No" message.</summary>
    public Route WithTlsOptional() => TlsOptional ? this : new Route(Key + "|tls-required=no", Kind, Hosts,
        Tls == TlsPolicy.None ? TlsPolicy.None : TlsPolicy.Opportunistic, MaxConnections, MaxMessagesPerSecond, Domain)
    {
        PolicyDomain = PolicyDomain, StsRecordId = StsRecordId, TlsRptRecord = TlsRptRecord, MxAuthentic = MxAuthentic, FromMx = FromMx, TlsOptional = true,
    };

    /// <summary>
    /// The recipient domain this route was resolved for (lower case; the router caches one route
    /// per domain), or null for a route built by hand. Traffic control gives a domain that a
    /// shaping rule names a site of its own.
    /// </summary>
    public string? Domain { get; }

    /// <summary>The traffic stage's cache for this route: its site and egress paths under the configuration in force.</summary>
    internal NativeRelay.Traffic.RouteBinding? TrafficBinding;

    public static Route Local { get; } = new("local", RouteKind.Local, [], TlsPolicy.None);

    public override string ToString() => Key;
}

/// <summary>One next-hop host with its addresses (IPv4 first, then IPv6), tried in order.</summary>
public sealed record RouteHost(string Name, int Port, int Preference, IPAddress[] Addresses);

/// <summary>
/// The answer for one recipient domain: a route, or a failure that applies to every recipient in
/// the domain (permanent: NXDOMAIN, null MX...; transient: SERVFAIL, timeout).
/// </summary>
public sealed class RouteResult
{
    private RouteResult(Route? route, SmtpReply failure)
    {
        Route = route;
        Failure = failure;
    }

    public Route? Route { get; }

    /// <summary>Why there is no route (only when <see cref="Route"/> is null).</summary>
    public SmtpReply Failure { get; }

    public static RouteResult To(Route route) => new(route, default);

    public static RouteResult Fail(int code, string text) => new(null, SmtpReply.Local(code, text));

    public override string ToString() => Route?.Key ?? Failure.ToString();
}
