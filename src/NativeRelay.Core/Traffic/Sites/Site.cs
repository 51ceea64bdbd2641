using NativeRelay.Routing;

namespace NativeRelay.Traffic.Sites;

/// <summary>
/// A site: the destinations that share one set of limits because one provider receives their
/// mail (KumoMTA's "MX rollup"). Domains whose MX records name the same hosts make one site,
/// named by those hosts sorted ("aspmx.l.google.com,alt1.aspmx.l.google.com,..." becomes
/// "alt1.aspmx.l.google.com,aspmx.l.google.com"); an operator's label ("gmail") replaces the name
/// of every site whose MX hosts all end with one of its suffixes, so the provider's many MX sets
/// are one site. A domain with a shaping rule of its own is a site of its own, named by the domain.
/// Immutable; one object per name and configuration (<see cref="SiteResolver"/>).
/// </summary>
public sealed class Site
{
    internal Site(string name, string? label, string[] hosts, string? domain)
    {
        Name = name;
        Label = label;
        Hosts = hosts;
        Domain = domain;
        Hash = (uint)StringComparer.Ordinal.GetHashCode(name);
    }

    /// <summary>The label, the domain, or the sorted MX host names (with ":port" when not the routing port).</summary>
    public string Name { get; }

    /// <summary>The operator's label that named this site, if one did.</summary>
    public string? Label { get; }

    /// <summary>The next-hop host names it was made from (sorted; of the first route seen for a labelled site).</summary>
    public IReadOnlyList<string> Hosts { get; }

    /// <summary>The domain of a domain's own site (a shaping rule names it), else null.</summary>
    public string? Domain { get; }

    /// <summary>Hash of the name (per process).</summary>
    public uint Hash { get; }

    public override string ToString() => Name;
}
