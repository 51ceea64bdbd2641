using StackExchange.Redis;

namespace NativeRelay.Cluster;

/// <summary>
/// The fleet's epoch: a random value in Redis, set by the first node that finds none. A Redis
/// that lost its data (restarted without persistence, a new server) has none or another one, and
/// then the shared state a node remembers being in Redis is not gone because the fleet removed
/// it: the node puts its own back (its actions in force, its suppression entries) instead of
/// dropping them to match an empty Redis.
/// </summary>
internal static class FleetEpoch
{
    // KEYS[1] the epoch key; ARGV[1] a value to set when there is none. Returns the epoch.
    private static readonly RedisScript GetOrSet = new("""
        local e = redis.call('GET', KEYS[1])
        if not e then
          redis.call('SET', KEYS[1], ARGV[1])
          e = ARGV[1]
        end
        return e
        """);

    /// <summary>A new epoch value (unguessability does not matter: it only has to differ).</summary>
    public static string NewValue() =>
        DateTimeOffset.UtcNow.ToUnixTimeMilliseconds().ToString(System.Globalization.CultureInfo.InvariantCulture) + "-"
        + Random.Shared.NextInt64().ToString("x16", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// The epoch kept in <paramref name="key"/> (each shared structure has its own, in its hash
    /// slot, so its scripts touch one slot of a Redis Cluster), set now when there is none.
    /// </summary>
    public static async Task<string> CurrentAsync(RedisLink link, RedisKey key) =>
        (string)(await link.RunAsync(GetOrSet, [key], [NewValue()]).ConfigureAwait(false))!;
}
