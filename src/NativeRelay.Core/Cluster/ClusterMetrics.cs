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

    public static readonly Counter DegradedTransitions = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_redis_transitions_total", "Times Redis went away or came back, as this node saw it.");
}
