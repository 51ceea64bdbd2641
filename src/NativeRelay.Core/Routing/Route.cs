namespace NativeRelay.Routing;

/// <summary>
/// Where a recipient's mail goes next. <see cref="Key"/> names the destination: messages with the
/// same key share a queue, connections and limits (so domains that share next hops share them too).
/// </summary>
public sealed record Route(string Key, IReadOnlyList<RouteHost> Hosts)
{
    /// <summary>No way to deliver yet: the message stays queued and is retried.</summary>
    public static Route None(string reason) => new("none", []) { NoRouteReason = reason };

    public string? NoRouteReason { get; init; }

    public bool IsNone => Hosts.Count == 0;
}

/// <summary>One next-hop host to try, in order.</summary>
public sealed record RouteHost(string Host, int Port);
