namespace NativeRelay.Config;

/// <summary>
/// The <c>cluster</c> section: this relay as one node of a fleet that shares its rate and
/// connection limits, traffic actions, suppression list and HTTP idempotency keys through Redis
/// (docs/CONFIG.md, "Cluster"; docs/deploy/fleet). Off unless <see cref="Redis"/> is set. Each
/// node keeps its own spool: Redis holds only what the fleet must agree on, and mail never waits
/// for it (without Redis a node falls back to its share of each limit).
/// Validated into <see cref="NativeRelay.Cluster.ClusterSettings"/>.
/// </summary>
public sealed class ClusterOptions
{
    /// <summary>
    /// A StackExchange.Redis connection string: "host:port[,host:port...][,option=value...]",
    /// e.g. "redis1:6379,ssl=true" or, through Sentinel, "sentinel1:26379,sentinel2:26379,serviceName=mymaster".
    /// Never with a password (use <see cref="PasswordFile"/>). Default: none, no fleet.
    /// </summary>
    public string? Redis { get; set; }

    /// <summary>A file holding the Redis password (its first line), read at start; never on the command line or in the connection string.</summary>
    public string? PasswordFile { get; set; }

    /// <summary>With ssl=true: a PEM bundle of the CAs that may sign the Redis server's certificate (beside the system store).</summary>
    public string? CaFile { get; set; }

    /// <summary>This node's name in the fleet (heartbeats, leases, cluster status). Default: the relay's host name.</summary>
    public string? Node { get; set; }

    /// <summary>Prefix of every Redis key and channel, so several fleets (or other users) can share one Redis.</summary>
    public string KeyPrefix { get; set; } = "nativerelay";

    /// <summary>A connection lease not renewed for this long is given back (a node that died holds its connections no longer).</summary>
    public int LeaseSeconds { get; set; } = 30;

    /// <summary>How often a node says it is alive (queue sizes, version); a node silent for three of these is gone.</summary>
    public int HeartbeatSeconds { get; set; } = 2;

    /// <summary>
    /// Most message tokens a node takes from a shared rate in one Redis round trip (fewer at low
    /// rates: at most a fifth of a second's worth). The fleet may exceed a rate by at most one batch.
    /// 32 keeps a node at full speed under one Redis round trip per 20 messages with its
    /// connection leases and heartbeats counted too (the rate alone: one per 32).
    /// </summary>
    public int RateBatch { get; set; } = 32;

    /// <summary>A Redis command without an answer after this long counts as Redis away (the node falls back to its share).</summary>
    public int TimeoutMilliseconds { get; set; } = 1000;
}
