namespace NativeRelay.Traffic.Shaping;

/// <summary>
/// The fleet's side of a node's limits (implemented by the cluster stage, through Redis): a
/// message rate or a connection limit named by a key the whole fleet agrees on. Null on a relay
/// without a cluster, so the shaping hot path pays one null check. Every call here is
/// synchronous and never waits for Redis: what must come from Redis is asked for in the
/// background and the caller is told when to look again (or woken).
/// </summary>
internal interface ISharedLimits
{
    /// <summary>The fleet's budget of these rates under <paramref name="key"/> (null when no rate is set); the same object for the same key, its rates updated.</summary>
    ISharedRate? Rate(string key, double? perSecond, double? perMinute, double? perHour, double? perDay);

    /// <summary>
    /// The fleet's budget of requests under <paramref name="key"/>: a bucket that holds a second's
    /// worth (a burst goes at once), taken a token per round trip so a request is refused only
    /// when the fleet as a whole is over the rate (HTTP token rates).
    /// </summary>
    ISharedRate RequestRate(string key, double perSecond);

    /// <summary>The fleet's connection leases under <paramref name="key"/> with <paramref name="limit"/> at most open at once; the same object for the same key.</summary>
    ISharedConnections Connections(string key, int limit);
}

/// <summary>A message rate shared by the fleet: tokens taken from Redis in batches and spent here.</summary>
internal interface ISharedRate
{
    /// <summary>Spends one token in hand (or of the local share while Redis is away); false with the time (Stopwatch ticks) to look again.</summary>
    bool TryTake(long now, out long readyAt);

    /// <summary>Gives back a token just taken (another limit of the same message said no).</summary>
    void Return();

    /// <summary>The earliest time a token may be had (a look; with <paramref name="fetch"/> it starts fetching a batch when none is in hand).</summary>
    long Ready(long now, bool fetch);

    /// <summary>Completes when it is worth trying again: a batch arrived (or Redis answered "wait"), or the time to ask came.</summary>
    Task WhenReady(CancellationToken cancel);
}

/// <summary>
/// A connection limit shared by the fleet: a lease per open connection, held in Redis and
/// renewed while the connection lives. The callers (one delivery loop) are woken through
/// <paramref name="wake"/> of <see cref="TryUse"/> on their own synchronization context.
/// </summary>
internal interface ISharedConnections
{
    /// <summary>
    /// Takes a lease for a new connection (or a slot of the local share while Redis is away);
    /// false: one is being asked for, and <paramref name="wake"/> is posted to
    /// <paramref name="loop"/> when it may have come (granted, refused for now, or Redis away).
    /// </summary>
    bool TryUse(SynchronizationContext loop, Action wake);

    /// <summary>A connection that took a lease did not open after all (its lease goes back to the hand).</summary>
    void Unuse();

    /// <summary>A connection closed: its lease is given back to the fleet.</summary>
    void Release();

    /// <summary>Connections open here without a lease the fleet knows of (opened while Redis was away, or a lease lost): they should close after their message.</summary>
    int Unleased { get; }

    /// <summary>Another node was refused a lease on the path a moment ago: a connection that has delivered gives its slot up (the fleet takes turns).</summary>
    bool OthersWant { get; }

    /// <summary>Who to tell (posted to <paramref name="loop"/>) when another node wants a slot: connections parked idle close at once.</summary>
    void Follow(SynchronizationContext loop, Action othersWant);
}
