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

    /// <summary>The fleet's traffic actions (null until <see cref="ShareActionsAsync"/>).</summary>
    public SharedActions? Actions { get; private set; }

    /// <summary>Shares this node's automation actions and resumes with the fleet: loads the actions in force, follows the others'.</summary>
    public async Task<NativeRelay.Traffic.Automation.IActionSync> ShareActionsAsync(NativeRelay.Traffic.Automation.ActionTable table, Log log)
    {
        var shared = new SharedActions(Link, table, log);
        await shared.StartAsync().ConfigureAwait(false);
        Actions = shared;
        return shared;
    }

    /// <summary>The fleet's HTTP idempotency keys (null until <see cref="ShareIdempotency"/>).</summary>
    public SharedIdempotency? Idempotency { get; private set; }

    /// <summary>HTTP idempotency keys for the fleet (nothing to start or stop: each request asks Redis).</summary>
    public NativeRelay.Api.IIdempotencyStore ShareIdempotency(Log log) => Idempotency ??= new SharedIdempotency(Link, log);

    /// <summary>The fleet's suppression list (null until <see cref="ShareSuppressionAsync"/>).</summary>
    public SharedSuppression? Suppression { get; private set; }

    /// <summary>
    /// Shares this node's suppression list with the fleet: its changes are sent (kept durably while
    /// Redis is away), the fleet's list is loaded and its changes followed.
    /// </summary>
    public async Task<SharedSuppression> ShareSuppressionAsync(NativeRelay.Traffic.Suppression.SuppressionList list, Log log)
    {
        Suppression = await SharedSuppression.StartAsync(Link, list, log).ConfigureAwait(false);
        return Suppression;
    }

    /// <summary>Stops following the fleet's list (before the list is closed); what was not sent stays in the outbox.</summary>
    public async Task StopSharingSuppressionAsync()
    {
        if (Suppression is { } shared)
        {
            Suppression = null;
            await shared.DisposeAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopSharingSuppressionAsync().ConfigureAwait(false);
        if (Actions is not null)
            await Actions.DisposeAsync().ConfigureAwait(false);
        await Limits.DisposeAsync().ConfigureAwait(false);
        await Membership.DisposeAsync().ConfigureAwait(false);
        await Link.DisposeAsync().ConfigureAwait(false);
    }
}
