namespace NativeRelay.Api;

/// <summary>
/// One bearer token's rights, as the tokens file describes it. Empty lists mean "any": a token
/// without pools may inject into any pool, one without sender domains may send as any domain.
/// </summary>
public sealed record ApiToken(string Name, IReadOnlyList<string> Pools, IReadOnlyList<string> SenderDomains, int? RequestsPerSecond)
{
    public bool MayUsePool(string pool) => Pools.Count == 0 || Pools.Contains(pool, StringComparer.OrdinalIgnoreCase);

    /// <summary>The domain itself or, for an entry ".example.com", any subdomain of it.</summary>
    public bool MaySendAs(string domain)
    {
        if (SenderDomains.Count == 0)
            return true;
        foreach (var d in SenderDomains)
        {
            if (d.StartsWith('.') ? domain.EndsWith(d, StringComparison.OrdinalIgnoreCase) : domain.Equals(d, StringComparison.OrdinalIgnoreCase))
                return true;
        }
        return false;
    }
}
