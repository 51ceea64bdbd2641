using NativeRelay.Traffic.Sources;

namespace NativeRelay.Traffic.Sites;

/// <summary>
/// Which (site, source) paths a rule speaks of, the same way for shaping rules and automation
/// rules: each part given must hold (a domain that is its own site; a site by name or label;
/// every MX host under a suffix; a source by name), and a part left out matches anything.
/// </summary>
public readonly record struct SiteScope(string? Domain, string? Site, string? MxSuffix, string? Source)
{
    public bool Covers(Site site, EgressSource source)
    {
        if (Source is not null && !string.Equals(Source, source.Name, StringComparison.Ordinal))
            return false;
        if (Domain is not null && !string.Equals(Domain, site.Domain, StringComparison.OrdinalIgnoreCase))
            return false;
        if (Site is not null && !string.Equals(Site, site.Name, StringComparison.OrdinalIgnoreCase)
            && !string.Equals(Site, site.Label, StringComparison.OrdinalIgnoreCase))
            return false;
        return MxSuffix is null || new SiteLabel("", [MxSuffix]).MatchesAll(site.Hosts);
    }
}
