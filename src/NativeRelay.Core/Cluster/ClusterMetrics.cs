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

    public static readonly Counter RateRoundTrips = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_rate_round_trips_total", "Round trips to Redis for shared rate tokens (a batch each, or a \"wait\").");

    public static readonly Counter RateTokensGranted = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_rate_tokens_granted_total", "Message (or HTTP request) tokens the fleet's rates granted this node.");

    public static readonly Counter RateTokensSpent = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_rate_tokens_spent_total", "Granted tokens spent; round trips / spent is the Redis cost per message.");

    public static readonly Counter RateWaits = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_rate_waits_total", "Times Redis answered \"wait\": the fleet is at a rate.");

    public static readonly Counter RateFallbackTokens = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_rate_fallback_tokens_total", "Messages let through by this node's share of a rate while Redis was away.");

    public static readonly Counter LeasesAcquired = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_leases_acquired_total", "Connection leases the fleet granted this node.");

    public static readonly Counter LeasesRefused = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_leases_refused_total", "Connection leases refused: the fleet was at the path's connection limit.");

    public static readonly Counter LeasesLost = RelayMetrics.Registry.Counter(
        "nativerelay_cluster_leases_lost_total", "Leases that lapsed while Redis was away and were taken by others (their connections close).");

    public static readonly Gauge LeasesHeld = RelayMetrics.Registry.Gauge(
        "nativerelay_cluster_leases_held", "Connection leases this node holds now.");
}
