using NativeRelay.Telemetry;

namespace NativeRelay.Cluster;

/// <summary>
/// The cluster stage: this relay as one node of a fleet sharing state through Redis. It owns the
/// connection (<see cref="RedisLink"/>) and the heartbeat (<see cref="ClusterMembership"/>); the
/// shared limits, actions, suppression list and idempotency keys are reached through it by the
/// stages that use them, each through one small interface, and each falls back to local state
/// while <see cref="Degraded"/>. Without a <c>cluster</c> section there is no node and the
/// relay pays nothing.
/// </summary>
public sealed class ClusterNode : IAsyncDisposable
{
    private ClusterNode(ClusterSettings settings, RedisLink link, ClusterMembership membership, Log log)
    {
        Settings = settings;
        Link = link;
        Membership = membership;
        Limits = new SharedLimits(link, () => membership.LiveNodes, log);
        link.AvailabilityChanged += available =>
        {
            if (available)
                _ = membership.BeatOnceAsync(); // the fleet sees the node again at once
        };
    }

    public ClusterSettings Settings { get; }
    public RedisLink Link { get; }
    public ClusterMembership Membership { get; }

    /// <summary>The fleet's rate and connection limits, as the traffic stage and the HTTP API reach them.</summary>
    internal SharedLimits Limits { get; }

    /// <summary>This node's name in the fleet.</summary>
    public string Node => Settings.Node;

    /// <summary>Redis is away: every shared limit is at its local share, shared state is local.</summary>
    public bool Degraded => !Link.Available;

    /// <summary>Connects (a Redis that does not answer yet is not an error: the node starts degraded) and sends the first heartbeat.</summary>
    public static async Task<ClusterNode> StartAsync(ClusterSettings settings, Func<NodeFacts> facts, Log log)
    {
        var link = await RedisLink.ConnectAsync(settings, log).ConfigureAwait(false);
        var membership = new ClusterMembership(link, facts, log);
        var node = new ClusterNode(settings, link, membership, log);
        await membership.StartAsync().ConfigureAwait(false);
        return node;
    }

    public async ValueTask DisposeAsync()
    {
        await Limits.DisposeAsync().ConfigureAwait(false);
        await Membership.DisposeAsync().ConfigureAwait(false);
        await Link.DisposeAsync().ConfigureAwait(false);
    }
}
