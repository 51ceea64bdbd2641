using NativeRelay.Telemetry;
using NativeRelay.Traffic.Shaping;

namespace NativeRelay.Cluster;

/// <summary>
/// The traffic stage's way to the fleet's limits (<see cref="ISharedLimits"/>): message rates as
/// token buckets in Redis taken in batches (<see cref="FleetRates"/>), connection limits as leases
/// (<see cref="ConnectionLeases"/>). Each falls back to this node's share of the limit (the limit
/// divided by the live nodes last seen) while Redis is away, and returns to the fleet's when it
/// answers again.
/// </summary>
internal sealed class SharedLimits : ISharedLimits, IAsyncDisposable
{
    public SharedLimits(RedisLink link, Func<int> liveNodes, Log log)
    {
        Rates = new FleetRates(link, liveNodes, log);
        Leases = new ConnectionLeases(link, liveNodes, log);
        Leases.Start();
        // What the limits become with each change (RedisLink says that Redis went or came back).
        link.AvailabilityChanged += available =>
        {
            if (!available)
                log.Warn($"cluster: shared rate and connection limits at this node's share: 1/{Math.Max(1, liveNodes())} of each "
                         + "(the live nodes last seen), connection limits at least 1");
            else
                log.Info("cluster: rate and connection limits are the fleet's again (tokens and leases from Redis)");
        };
    }

    public FleetRates Rates { get; }
    public ConnectionLeases Leases { get; }

    public ISharedRate? Rate(string key, double? perSecond, double? perMinute, double? perHour, double? perDay) =>
        Rates.Rate(key, perSecond, perMinute, perHour, perDay);

    public ISharedRate RequestRate(string key, double perSecond) =>
        Rates.Rate(key, perSecond, null, null, null, burstSeconds: 1)!;

    public ISharedConnections Connections(string key, int limit) => Leases.Connections(key, limit);

    public ValueTask DisposeAsync() => Leases.DisposeAsync();
}
