using System.Collections.Concurrent;
using System.Text;
using NativeRelay.Routing;

namespace NativeRelay.Traffic.Sites;

/// <summary>A site label: a name and the MX host suffixes that give it (lower case, without a leading dot).</summary>
public sealed record SiteLabel(string Name, IReadOnlyList<string> Suffixes)
{
    /// <summary>True when every host ends with one of the suffixes (or is one).</summary>
    public bool MatchesAll(IReadOnlyList<string> hosts)
    {
        if (hosts.Count == 0)
            return false;
        foreach (var host in hosts)
            if (!MatchesAny(host))
                return false;
        return true;
    }

    private bool MatchesAny(string host)
    {
        foreach (var suffix in Suffixes)
            if (HostEndsWith(host, suffix))
                return true;
        return false;
    }

    /// <summary>"mx.google.com" ends with "google.com" (and with "mx.google.com"), not with "oogle.com". The host may carry ":port".</summary>
    public static bool HostEndsWith(string host, string suffix)
    {
        var name = host.AsSpan();
        int colon = name.LastIndexOf(':');
        if (colon > 0 && name.IndexOf(':') == colon)
            name = name[..colon];
        if (!name.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
            return false;
        return name.Length == suffix.Length || name[name.Length - suffix.Length - 1] == '.';
    }
}

/// <summary>
/// Gives a route its site: the sorted host names of its next hops, or a label, or the domain when
/// a shaping rule names it. One <see cref="Site"/> object per name (interned, bounded), so sites
/// compare by reference on the hot path and the delivery side caches one per route.
/// </summary>
public sealed class SiteResolver
{
    private const int MaxInterned = 100_000;

    private readonly IReadOnlyList<SiteLabel> _labels;
    private readonly IReadOnlySet<string> _ownSiteDomains;
    private readonly int _remotePort;
    private readonly ConcurrentDictionary<string, Site> _sites = new(StringComparer.Ordinal);

    public SiteResolver(IReadOnlyList<SiteLabel> labels, IReadOnlySet<string> ownSiteDomains, int remotePort)
    {
        _labels = labels;
        _ownSiteDomains = ownSiteDomains;
        _remotePort = remotePort;
    }

    public IReadOnlyList<SiteLabel> Labels => _labels;

    /// <summary>The site of a route (to SMTP next hops).</summary>
    public Site SiteOf(Route route)
    {
        var hosts = HostNames(route);
        string? domain = route.Domain is { } d && _ownSiteDomains.Contains(d) ? d : null;
        string? label = null;
        if (domain is null)
        {
            foreach (var l in _labels)
            {
                if (l.MatchesAll(hosts))
                {
                    label = l.Name;
                    break;
                }
            }
        }
        string name = domain ?? label ?? string.Join(',', hosts);
        if (name.Length == 0)
            name = route.Key;
        if (_sites.TryGetValue(name, out var site))
            return site;
        if (_sites.Count >= MaxInterned)
            _sites.Clear(); // only sharing of objects is lost: sites compare by name where it matters
        return _sites.GetOrAdd(name, new Site(name, label, hosts, domain));
    }

    /// <summary>The route's host names, lower case, without a trailing dot, ":port" added when not the routing port; sorted, distinct.</summary>
    internal string[] HostNames(Route route)
    {
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var host in route.Hosts)
        {
            var name = host.Name.TrimEnd('.').ToLowerInvariant();
            if (host.Port != _remotePort)
                name = name.Contains(':') ? $"[{name}]:{host.Port}" : $"{name}:{host.Port}";
            names.Add(name);
        }
        var result = new string[names.Count];
        names.CopyTo(result);
        return result;
    }
}
