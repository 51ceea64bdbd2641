using System.Collections.Concurrent;
using NativeRelay.Traffic.Shaping;
using NativeRelay.Traffic.Sites;
using NativeRelay.Traffic.Sources;

namespace NativeRelay.Traffic;

/// <summary>
/// Where a job leaves from and goes to: an egress source and a site. Its hash (of the two names)
/// picks the one delivery loop that owns the path's shaping state and queues, so a path's limits
/// need no lock. One object per (source, site) and configuration (interned), cached on the
/// routes that lead to it, so assigning a path to a job allocates nothing.
/// </summary>
public sealed class EgressPath
{
    internal EgressPath(EgressSource source, Site site, TrafficConfig config)
    {
        Source = source;
        Site = site;
        Config = config;
        // Names only: the same (source, site) lands on the same loop under every configuration.
        uint h = source.Hash ^ site.Hash;
        h ^= h >> 15;
        h *= 0x2C1B3C6Du;
        h ^= h >> 12;
        Hash = h;
    }

    public EgressSource Source { get; }
    public Site Site { get; }
    internal TrafficConfig Config { get; }
    public uint Hash { get; }

    /// <summary>The owning loop's shaping state, cached here by that loop (no other thread reads it).</summary>
    internal SiteShaper? Shaper;

    public override string ToString() => $"{Source.Name} -> {Site.Name}";
}

/// <summary>What a route resolves to under one configuration: its site and its paths by source (filled lazily).</summary>
internal sealed class RouteBinding(TrafficConfig config, Site site)
{
    public readonly TrafficConfig Config = config;
    public readonly Site Site = site;
    public readonly EgressPath?[] Paths = new EgressPath?[config.Settings.Sources.Count + 1];
}

/// <summary>One configuration of the traffic stage: settings, sites, interned paths. Replaced whole by a reload that changes something.</summary>
internal sealed class TrafficConfig
{
    private const int MaxPaths = 200_000;
    private readonly ConcurrentDictionary<(EgressSource, string), EgressPath> _paths = new();

    public TrafficConfig(TrafficSettings settings, int remotePort, int generation)
    {
        Settings = settings;
        Sites = new SiteResolver(settings.Shaping.Labels, settings.Shaping.OwnSiteDomains, remotePort);
        RemotePort = remotePort;
        Generation = generation;
    }

    public int RemotePort { get; }

    public TrafficSettings Settings { get; }
    public SiteResolver Sites { get; }
    public int Generation { get; }

    public EgressPath Path(EgressSource source, Site site)
    {
        if (_paths.TryGetValue((source, site.Name), out var path))
            return path;
        if (_paths.Count >= MaxPaths)
            _paths.Clear(); // paths then compare by names where it matters (the loops key by name)
        return _paths.GetOrAdd((source, site.Name), new EgressPath(source, site, this));
    }
}
