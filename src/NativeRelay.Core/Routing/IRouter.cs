namespace NativeRelay.Routing;

/// <summary>Decides the next hop for a recipient domain.</summary>
public interface IRouter
{
    /// <summary>
    /// The answer for a domain if it is known without waiting (cached and fresh, or static). The
    /// domain is the part after the '@' as received (UTF-8, any case). Allocates nothing on a hit.
    /// </summary>
    bool TryResolveCached(ReadOnlySpan<byte> domain, out RouteResult result);

    /// <summary>Resolves a domain (DNS lookups as needed, never blocking a thread).</summary>
    ValueTask<RouteResult> ResolveAsync(ReadOnlySpan<byte> domain);
}
