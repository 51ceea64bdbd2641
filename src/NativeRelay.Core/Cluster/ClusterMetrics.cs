using NativeRelay.Telemetry;

namespace NativeRelay.Cluster;

/// <summary>The cluster stage's metrics (registered when a node first touches them: only fleets show them).</summary>
public static class ClusterMetrics
{
    public static readonly Gauge RedisUp = RelayMetrics.Registry.Gauge(
        "nativerelay_cluster_redis_up", "1 while Redis answers; 0 while the node is degraded (its share of each limit, local state).");

    public static readonly Gauge Nodes = RelayMetrics.Registry.Gauge(
        "nativerelay_cluster_nodes", "Nodes of the fleet with a recent heartbeat, as this node last saw them (the divisor of the fallback shares).");

    public static readonly Counter RedisCalls = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_redis_calls_total", "Round trips to Redis (scripts and commands; a batch of rate tokens is one).");

    public static readonly Counter RedisFailures = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_redis_failures_total", "Round trips to Redis that failed for want of Redis (timeouts, lost connections).");

    public static readonly Counter ActionsReceived = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_actions_received_total", "Traffic actions and resumes of other nodes put in force (or lifted) on this node.");

    public static readonly Counter SuppressionReceived = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_suppression_received_total", "Suppression changes of other nodes applied to this node's copy of the list.");

    public static readonly Counter SuppressionSent = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_suppression_sent_total", "Suppression changes of this node sent to the fleet.");

    public static readonly Gauge SuppressionPending = RelayMetrics.Registry.Gauge(
        "nativerelay_cluster_suppression_pending", "Suppression changes of this node not yet in Redis (kept on disk until Redis answers).");

    public static readonly Counter SuppressionReloads = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_suppression_loads_total", "Times this node loaded the fleet's whole suppression list (start, a trimmed stream, a Redis that lost its data).");

    public static readonly Counter IdempotencyReplayed = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_idempotency_replayed_total", "HTTP requests answered with the answer another node kept for their idempotency key.");

    public static readonly Counter DegradedTransitions = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_redis_transitions_total", "Times Redis went away or came back, as this node saw it.");
}
