using System.Globalization;
using System.Net;
using System.Text;

namespace NativeRelay.Routing;

/// <summary>
/// Finds the next hop of a recipient domain, in this order: a static route (exact domain, then
/// the longest "*.suffix", then "*": the smarthost); an address literal ([192.0.2.1],
/// [IPv6:...]) when allowed; otherwise MX resolution as RFC 5321 5.1 describes: MX hosts in
/// preference order, each host's A and AAAA addresses; no MX records means the domain itself is
/// the host (implicit MX); a null MX (RFC 7505) fails at once with 556 5.1.10; NXDOMAIN fails
/// permanently; SERVFAIL or a timeout is transient. A host that is this relay itself (and every
/// host of equal or worse preference) is dropped from the list (RFC 5321 5.1).
/// <para>
/// Answers are cached per domain for the smallest TTL that went into them, negative answers for
/// their SOA minimum (RFC 2308), transient failures for a few seconds; host addresses are cached
/// separately, so domains that share MX hosts share those lookups. Both caches are bounded.
/// Lookups are asynchronous and single-flight; no thread ever blocks on DNS.
/// </para>
/// </summary>
public sealed class Router : IRouter
{
    /// <summary>How long a transient DNS failure is remembered (RFC 2308 7.1 allows up to 5 minutes).</summary>
    internal static readonly TimeSpan TransientFailureTtl = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan MinTtl = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan MaxTtl = TimeSpan.FromDays(1);
    /// <summary>MX hosts considered per domain (the best ones).</summary>
    internal const int MaxMxHosts = 10;
    private const int MaxDomainChars = 255;

    private readonly RoutingSettings _settings;
    private readonly string _hostname;
    private readonly IDnsResolver _dns;
    private readonly TtlCache<RouteResult> _domains;
    private readonly TtlCache<AddressAnswer> _hosts;
    private readonly Func<string, Task<(RouteResult, TimeSpan)>> _loadDomain;
    private readonly Func<string, Task<(AddressAnswer, TimeSpan)>> _loadHost;
    private readonly IdnMapping _idn = new();
    /// <summary>MTA-STS is on and can be used: its record is asked and its policies route a domain to a destination of its own.</summary>
    private readonly bool _mtaSts;

    /// <summary>The resolver this router asks (shared with the TLS policy stage's DANE lookups).</summary>
    public IDnsResolver Dns => _dns;

    /// <param name="openSslProblem">Why OpenSSL cannot be loaded, or null when it can (by default, the process's own probe).</param>
    public Router(RoutingSettings settings, string hostname, IDnsResolver? dns = null, Func<long>? nowMs = null, Func<string?>? openSslProblem = null)
    {
        _settings = settings;
        // MTA-STS skipped without OpenSSL (StartupChecks.FetchesMtaSts) is off here too: its
        // "_mta-sts" record would only be asked to be ignored, a DNS query per domain for nothing.
        _mtaSts = NativeRelay.Hosting.StartupChecks.FetchesMtaSts(settings, (openSslProblem ?? (static () => NativeRelay.Net.OpenSslLibrary.Problem))());
        _hostname = hostname.TrimEnd('.');
        _dns = dns ?? new DnsClientResolver(settings.DnsServers, settings.DnsTimeout, dnssec: settings.Dnssec);
        nowMs ??= static () => Environment.TickCount64;
        _domains = new TtlCache<RouteResult>(settings.DnsCacheSize, nowMs);
        _hosts = new TtlCache<AddressAnswer>(settings.DnsCacheSize, nowMs);
        _loadDomain = LoadDomainAsync;
        _loadHost = LoadHostAsync;
    }

    internal int CachedDomains => _domains.Count;
    internal int CachedHosts => _hosts.Count;

    public bool TryResolveCached(ReadOnlySpan<byte> domain, out RouteResult result)
    {
        Span<char> chars = stackalloc char[MaxDomainChars];
        if (!TryDecode(domain, chars, out int length))
        {
            result = null!;
            return false;
        }
        return _domains.TryGetFresh(chars[..length], out result);
    }

    public ValueTask<RouteResult> ResolveAsync(ReadOnlySpan<byte> domain)
    {
        if (domain.Length > MaxDomainChars)
            return ValueTask.FromResult(RouteResult.Fail(550, "5.1.2 the domain name is too long"));
        string name = Encoding.UTF8.GetString(domain).ToLowerInvariant();
        if (_domains.TryGetFresh(name, out var cached))
            return ValueTask.FromResult(cached);
        return new ValueTask<RouteResult>(_domains.GetAsync(name, _loadDomain));
    }

    /// <summary>Resolves a domain given as text (tests, tools).</summary>
    public ValueTask<RouteResult> ResolveAsync(string domain) => ResolveAsync(Encoding.UTF8.GetBytes(domain));

    private static bool TryDecode(ReadOnlySpan<byte> domain, Span<char> chars, out int length)
    {
        length = 0;
        if (domain.Length > chars.Length)
            return false;
        if (Ascii.IsValid(domain))
        {
            Ascii.ToLower(domain, chars, out length);
            return true;
        }
        if (!Encoding.UTF8.TryGetChars(domain, chars, out length))
            return false;
        // Unicode domains are cached as written (compared ignoring case), as ResolveAsync stores them.
        for (int i = 0; i < length; i++)
            chars[i] = char.ToLowerInvariant(chars[i]);
        return true;
    }

    private async Task<(RouteResult, TimeSpan)> LoadDomainAsync(string domain)
    {
        try
        {
            return await ComputeAsync(domain).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            return (RouteResult.Fail(451, $"4.4.3 routing {domain} failed: {e.Message}"), TransientFailureTtl);
        }
    }

    private async Task<(RouteResult, TimeSpan)> ComputeAsync(string domain)
    {
        if (domain.Length == 0)
            return (RouteResult.Fail(550, "5.1.3 the address has no domain"), MaxTtl);
        var route = _settings.Routes.Find(domain);
        if (route is not null)
        {
            if (route.Local)
                return (RouteResult.To(Routing.Route.Local), MaxTtl);
            if (route.HasHosts)
                return await StaticAsync(route, domain).ConfigureAwait(false);
        }
        if (domain[0] == '[')
            return AddressLiteral(domain);
        return await MxAsync(domain, route).ConfigureAwait(false);
    }

    private (RouteResult, TimeSpan) AddressLiteral(string domain)
    {
        if (!_settings.AllowAddressLiterals)
            return (RouteResult.Fail(550, $"5.7.1 delivery to the address literal {domain} is not allowed"), MaxTtl);
        if (!TryParseAddressLiteral(domain, out var address))
            return (RouteResult.Fail(550, $"5.1.2 {domain} is not an IPv4 or IPv6 address literal"), MaxTtl);
        int port = _settings.RemotePort;
        var key = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]:{port}" : $"{address}:{port}";
        var tls = _settings.DefaultTls;
        var built = new Route(AppendPolicy(key, tls, null, _settings.DefaultMaxMessagesPerSecond), RouteKind.Smtp,
            [new RouteHost(address.ToString(), port, 0, [address])], tls, null, _settings.DefaultMaxMessagesPerSecond, domain);
        return (RouteResult.To(built), MaxTtl);
    }

    /// <summary>"[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 4.1.3).</summary>
    public static bool TryParseAddressLiteral(ReadOnlySpan<char> literal, out IPAddress address)
    {
        address = IPAddress.None;
        if (literal.Length < 3 || literal[0] != '[' || literal[^1] != ']')
            return false;
        var inner = literal[1..^1];
        if (inner.StartsWith("IPv6:", StringComparison.OrdinalIgnoreCase))
        {
            return IPAddress.TryParse(inner[5..], out address!)
                   && address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;
        }
        // An IPv4 literal is exactly four dotted numbers (IPAddress.TryParse accepts "1" or "1.2").
        int dots = inner.Count('.');
        return dots == 3 && IPAddress.TryParse(inner, out address!)
               && address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork;
    }

    private async Task<(RouteResult, TimeSpan)> StaticAsync(StaticRoute route, string domain)
    {
        var tls = route.Tls ?? _settings.DefaultTls;
        double rate = route.MaxMessagesPerSecond ?? _settings.DefaultMaxMessagesPerSecond;
        var lookups = new Task<AddressAnswer>?[route.Hosts.Count];
        for (int i = 0; i < lookups.Length; i++)
            if (!IPAddress.TryParse(route.Hosts[i].Host, out _))
                lookups[i] = _hosts.GetAsync(route.Hosts[i].Host, _loadHost);

        var hosts = new List<RouteHost>(route.Hosts.Count);
        var key = new StringBuilder("route:");
        TimeSpan ttl = MaxTtl;
        bool transient = false;
        string? error = null;
        for (int i = 0; i < lookups.Length; i++)
        {
            var spec = route.Hosts[i];
            if (i > 0)
                key.Append(',');
            key.Append(spec.Host).Append(':').Append(spec.Port);
            IPAddress[] addresses;
            if (lookups[i] is null)
                addresses = [IPAddress.Parse(spec.Host)];
            else
            {
                var answer = await lookups[i]!.ConfigureAwait(false);
                ttl = Min(ttl, answer.Ttl);
                transient |= answer.Status == DnsStatus.TempFail;
                error ??= answer.Error;
                addresses = answer.Addresses;
            }
            if (addresses.Length > 0)
                hosts.Add(new RouteHost(spec.Host, spec.Port, i, addresses));
        }
        if (hosts.Count == 0)
        {
            // A static route with no usable host is a configuration or DNS problem: keep the mail.
            return (RouteResult.Fail(451, $"4.4.4 no host of the route {route.Pattern} has an address"
                                         + (transient ? $" (DNS: {error ?? "failure"})" : "")), transient ? TransientFailureTtl : Clamp(ttl));
        }
        var built = new Route(AppendPolicy(key.ToString(), tls, route.Connections, rate), RouteKind.Smtp, hosts, tls,
            route.Connections, rate, domain);
        return (RouteResult.To(built), Clamp(ttl));
    }

    private async Task<(RouteResult, TimeSpan)> MxAsync(string domain, StaticRoute? overrides)
    {
        string ascii;
        try
        {
            ascii = Ascii.IsValid(domain) ? domain : _idn.GetAscii(domain);
        }
        catch (ArgumentException)
        {
            return (RouteResult.Fail(550, $"5.1.2 the domain {domain} is not a valid internationalized domain name"), MaxTtl);
        }
        if (!Config.RelaySettings.IsValidHostname(ascii))
            return (RouteResult.Fail(550, $"5.1.2 {domain} is not a valid domain name"), MaxTtl);

        // The policy records are asked beside the MX (never after it), and only when their feature is on.
        var stsTxt = _mtaSts ? SafeTxtAsync("_mta-sts." + ascii) : null;
        var rptTxt = _settings.TlsRpt ? SafeTxtAsync("_smtp._tls." + ascii) : null;
        var mx = await _dns.QueryMxAsync(ascii, CancellationToken.None).ConfigureAwait(false);
        switch (mx.Status)
        {
            case DnsStatus.TempFail:
                return (RouteResult.Fail(451, $"4.4.3 DNS lookup of the MX of {domain} failed: {mx.Error ?? "no answer"}"), TransientFailureTtl);
            case DnsStatus.NxDomain:
                return (RouteResult.Fail(550, $"5.1.2 the domain {domain} does not exist (DNS: NXDOMAIN)"), Clamp(mx.Ttl));
        }
        if (mx.NullMx)
            return (RouteResult.Fail(556, $"5.1.10 the domain {domain} does not accept mail (null MX, RFC 7505)"), Clamp(mx.Ttl));

        bool implicitMx = mx.Status == DnsStatus.NoData;
        var candidates = new List<(int Preference, string Host)>(implicitMx ? 1 : mx.Hosts.Count);
        if (implicitMx)
            candidates.Add((0, ascii));
        else
            candidates.AddRange(mx.Hosts);
        candidates.Sort(static (a, b) => a.Preference != b.Preference ? a.Preference.CompareTo(b.Preference)
            : string.CompareOrdinal(a.Host, b.Host));
        // RFC 5321 5.1: if this relay is in the list, it and every host of equal or worse preference go.
        for (int i = 0; i < candidates.Count; i++)
        {
            if (string.Equals(candidates[i].Host, _hostname, StringComparison.OrdinalIgnoreCase))
            {
                int own = candidates[i].Preference;
                candidates.RemoveAll(c => c.Preference >= own);
                if (candidates.Count == 0)
                    return (RouteResult.Fail(554, $"5.4.6 mail for {domain} loops back to myself (this relay is its best MX)"), Clamp(mx.Ttl));
                break;
            }
        }
        if (candidates.Count > MaxMxHosts)
            candidates.RemoveRange(MaxMxHosts, candidates.Count - MaxMxHosts);

        var lookups = new Task<AddressAnswer>?[candidates.Count];
        for (int i = 0; i < candidates.Count; i++)
            if (!IPAddress.TryParse(candidates[i].Host, out _))
                lookups[i] = _hosts.GetAsync(candidates[i].Host, _loadHost);

        int port = _settings.RemotePort;
        var hosts = new List<RouteHost>(candidates.Count);
        TimeSpan ttl = implicitMx ? MaxTtl : mx.Ttl;
        bool transient = false;
        string? error = null;
        for (int i = 0; i < candidates.Count; i++)
        {
            var (preference, host) = candidates[i];
            IPAddress[] addresses;
            if (lookups[i] is null)
                addresses = [IPAddress.Parse(host)];
            else
            {
                var answer = await lookups[i]!.ConfigureAwait(false);
                ttl = Min(ttl, answer.Ttl);
                if (answer.Status == DnsStatus.TempFail)
                {
                    transient = true;
                    error ??= answer.Error;
                }
                addresses = answer.Addresses;
            }
            if (addresses.Length > 0)
                hosts.Add(new RouteHost(host, port, preference, addresses));
        }
        if (hosts.Count == 0)
        {
            if (transient)
                return (RouteResult.Fail(451, $"4.4.3 DNS lookup of the addresses of {domain}'s mail hosts failed: {error ?? "no answer"}"), TransientFailureTtl);
            return implicitMx
                ? (RouteResult.Fail(550, $"5.1.2 the domain {domain} has no MX and no address records"), Clamp(ttl))
                : (RouteResult.Fail(550, $"5.4.4 no MX host of {domain} has an address"), Clamp(ttl));
        }

        // The key names the next-hop set: hosts in preference groups (',' within a group, ';'
        // between groups), the port and the policy. Equal sets share one destination.
        var key = new StringBuilder("mx:");
        for (int i = 0; i < hosts.Count; i++)
        {
            if (i > 0)
                key.Append(hosts[i].Preference == hosts[i - 1].Preference ? ',' : ';');
            key.Append(hosts[i].Name);
        }
        key.Append(':').Append(port);
        var tls = overrides?.Tls ?? _settings.DefaultTls;
        double rate = overrides?.MaxMessagesPerSecond ?? _settings.DefaultMaxMessagesPerSecond;

        // A domain with TLS policies of its own (MTA-STS, TLS-RPT) gets its own destination, so its
        // connections are checked and counted for it; every other domain shares by next-hop set.
        string? stsId = null, rpt = null;
        if (stsTxt is not null)
        {
            var answer = await stsTxt.ConfigureAwait(false);
            if (answer.Status == DnsStatus.Ok)
            {
                stsId = NativeRelay.TlsPolicies.MtaSts.MtaStsRecord.FromTxt(answer.Records, out _)?.Id;
                ttl = Min(ttl, answer.Ttl);
            }
        }
        if (rptTxt is not null)
        {
            var answer = await rptTxt.ConfigureAwait(false);
            if (answer.Status == DnsStatus.Ok && NativeRelay.TlsPolicies.Reporting.TlsRptRecord.FromTxt(answer.Records) is { } record)
            {
                rpt = record;
                ttl = Min(ttl, answer.Ttl);
            }
        }
        bool cachedSts = _mtaSts && stsId is null && _settings.MtaStsDirectory is { } directory
                         && File.Exists(Path.Combine(directory, ascii + ".policy"));
        string? policyDomain = stsId is not null || rpt is not null || cachedSts ? ascii : null;
        if (policyDomain is not null)
            key.Append("|policy=").Append(policyDomain);
        var built = new Route(AppendPolicy(key.ToString(), tls, overrides?.Connections, rate), RouteKind.Smtp, hosts, tls,
            overrides?.Connections, rate, domain)
        {
            PolicyDomain = policyDomain,
            StsRecordId = stsId,
            TlsRptRecord = rpt,
            MxAuthentic = _settings.Dnssec && mx.Authentic,
            FromMx = true,
        };
        return (RouteResult.To(built), Clamp(ttl));
    }

    private string AppendPolicy(string key, TlsPolicy tls, int? connections, double rate)
    {
        if (tls == _settings.DefaultTls && connections is null && rate == _settings.DefaultMaxMessagesPerSecond)
            return key;
        var sb = new StringBuilder(key);
        if (tls != _settings.DefaultTls)
            sb.Append("|tls=").Append(RoutingSettings.TlsName(tls));
        if (connections is not null)
            sb.Append("|connections=").Append(connections.Value);
        if (rate != _settings.DefaultMaxMessagesPerSecond)
            sb.Append("|rate=").Append(rate.ToString(CultureInfo.InvariantCulture));
        return sb.ToString();
    }

    private async Task<TxtAnswer> SafeTxtAsync(string name)
    {
        try
        {
            return await _dns.QueryTxtAsync(name, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            return new TxtAnswer(DnsStatus.TempFail, [], TimeSpan.Zero, e.Message);
        }
    }

    private async Task<(AddressAnswer, TimeSpan)> LoadHostAsync(string host)
    {
        AddressAnswer answer;
        try
        {
            answer = await _dns.QueryAddressesAsync(host, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            answer = new AddressAnswer(DnsStatus.TempFail, [], TimeSpan.Zero, e.Message);
        }
        return (answer, answer.Status == DnsStatus.TempFail ? TransientFailureTtl : Clamp(answer.Ttl));
    }

    private static TimeSpan Clamp(TimeSpan ttl) => ttl < MinTtl ? MinTtl : ttl > MaxTtl ? MaxTtl : ttl;

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
