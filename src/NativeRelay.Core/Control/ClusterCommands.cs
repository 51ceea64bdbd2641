using NativeRelay.Cluster;

namespace NativeRelay.Control;

/// <summary>
/// The control socket's <c>cluster-status</c> (<c>nativerelay cluster status</c>, <c>queue stats
/// --cluster</c>): this node's own view (Redis reachable or not, the live count its fallback
/// shares divide by) and the fleet's nodes from their heartbeats. While Redis is away the node
/// list cannot be read; the last one read is given with its time, so an operator still sees the
/// fleet as it was.
/// </summary>
internal sealed class ClusterCommands(ClusterNode node)
{
    private readonly object _lock = new();
    private List<ControlClusterNode>? _lastNodes;
    private long _lastNodesUnixMs;

    public const string NotAFleet = "this relay is not part of a fleet (no cluster.redis in its configuration, no --redis)";

    public async Task<ControlResponse> StatusAsync()
    {
        var settings = node.Settings;
        var cluster = new ControlCluster
        {
            Node = node.Node,
            Redis = RedisConnectionString.Redact(settings.Redis),
            Degraded = node.Degraded,
            LiveNodes = node.Membership.LiveNodes,
            HeartbeatSeconds = (int)settings.Heartbeat.TotalSeconds,
            LeaseSeconds = (int)settings.Lease.TotalSeconds,
        };
        try
        {
            var nodes = await node.Membership.NodesAsync().ConfigureAwait(false);
            long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            cluster.Nodes = nodes.Select(n => new ControlClusterNode
            {
                Name = n.Name,
                Live = n.Live,
                LastHeartbeatUnixMs = n.LastSeenUnixMs,
                LastHeartbeatAgeMs = Math.Max(0, now - n.LastSeenUnixMs),
                StartedUnixMs = n.StartedUnixMs,
                Version = n.Version,
                Active = n.Active,
                Deferred = n.Deferred,
                Held = n.Held,
                Degraded = n.Degraded,
            }).ToList();
            lock (_lock)
            {
                _lastNodes = cluster.Nodes;
                _lastNodesUnixMs = now;
            }
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            cluster.Degraded = true;
            cluster.NodesError = $"Redis is unreachable: {Reason(e)}";
            lock (_lock)
            {
                if (_lastNodes is not null)
                {
                    cluster.Nodes = _lastNodes;
                    cluster.NodesFromUnixMs = _lastNodesUnixMs;
                }
            }
        }
        return new ControlResponse { Done = true, Ok = true, Cluster = cluster };
    }

    /// <summary>The client library's first sentence (its messages go on with a long diagnostic dump).</summary>
    private static string Reason(Exception e)
    {
        string text = e.Message;
        int cut = text.IndexOf(" - ", StringComparison.Ordinal);
        if (cut > 0)
            text = text[..cut];
        return text.Length > 200 ? text[..200] + "..." : text;
    }
}
