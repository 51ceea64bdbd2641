using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json;
using NativeRelay.Api;
using NativeRelay.Telemetry;
using StackExchange.Redis;

namespace NativeRelay.Cluster;

/// <summary>
/// HTTP idempotency keys for the whole fleet (<see cref="IIdempotencyStore"/>). The first request
/// with a (token, key) pair, on any node, claims it in Redis with SET NX (a "pending" value that
/// expires after <see cref="ClaimLifetime"/>, in case its node dies before it answers); when it
/// has its answer (the message ids) the value becomes that answer, kept as long as the local
/// journal keeps one (a day from the request). A request with the pair on another node meanwhile
/// waits for the answer, as a duplicate on the same node waits in the journal, and gets it. With
/// Redis away a node decides alone from its own journal (a key sent to two nodes then may inject
/// twice, as if they were not a fleet), and nothing fails.
/// </summary>
public sealed class SharedIdempotency : IIdempotencyStore
{
    /// <summary>How long a claim holds without an answer (a node that died while injecting gives the key back then).</summary>
    public static readonly TimeSpan ClaimLifetime = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(50);
    private const string PendingPrefix = "pending\t";

    // KEYS[1] the key. ARGV: the claim this node holds ('' if none), the answer ('' to give the key back), its lifetime ms.
    // Writes the answer when the key is this node's claim or free; gives back only this node's claim.
    private static readonly RedisScript CompleteScript = new("""
        local v = redis.call('GET', KEYS[1])
        if v and v ~= ARGV[1] then return 0 end
        if ARGV[2] == '' then
          if v then redis.call('DEL', KEYS[1]) end
        else
          redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
        end
        return 1
        """);

    private readonly RedisLink _link;
    private readonly Log _log;
    private readonly ConcurrentDictionary<string, string> _claims = new(StringComparer.Ordinal);

    public SharedIdempotency(RedisLink link, Log log)
    {
        _link = link;
        _log = log;
    }

    private RedisKey KeyOf(string token, string key) =>
        _link.Key("idem:" + token.Length.ToString(CultureInfo.InvariantCulture) + ":" + token + ":" + key);

    public async Task<IdempotencyRecord?> ClaimAsync(string token, string key, DateTimeOffset now)
    {
        var redisKey = KeyOf(token, key);
        string claim = PendingPrefix + _link.Settings.Node + "\t" + FleetEpoch.NewValue(); // unique enough: only this node compares it
        var deadline = DateTime.UtcNow + ClaimLifetime * 2;
        bool told = false;
        try
        {
            while (_link.Available && DateTime.UtcNow < deadline)
            {
                if (await _link.CallAsync(db => db.StringSetAsync(redisKey, claim, ClaimLifetime, When.NotExists)).ConfigureAwait(false))
                {
                    _claims[token + "\n" + key] = claim;
                    return null;
                }
                var value = (string?)await _link.CallAsync(db => db.StringGetAsync(redisKey)).ConfigureAwait(false);
                if (value is null)
                    continue; // given back or expired just now: claim it
                if (!value.StartsWith(PendingPrefix, StringComparison.Ordinal))
                {
                    try
                    {
                        if (JsonSerializer.Deserialize(value, ClusterJsonContext.Default.IdempotencyRecord) is { } record)
                        {
                            ClusterMetrics.IdempotencyReplayed.Increment();
                            return record;
                        }
                    }
                    catch (JsonException)
                    {
                    }
                    _log.Warn($"cluster: the fleet's idempotency key {key} (token {token}) holds something that is not an answer: deciding here");
                    return null;
                }
                if (!told)
                {
                    told = true;
                    string node = value.Split('\t')[1];
                    _log.Info($"http: idempotency key {key} (token {token}) is being used on node {node}: waiting for its answer");
                }
                await Task.Delay(Poll).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
        }
        catch (RedisException e)
        {
            // Not for want of Redis (a key of another type, a refused command): the request still goes through.
            _log.Warn($"cluster: the fleet's idempotency key {key} (token {token}) could not be claimed: {e.Message}; deciding here");
        }
        return null; // Redis away: this node's journal decides
    }

    public async Task CompleteAsync(string token, string key, IdempotencyRecord? answer)
    {
        _claims.TryRemove(token + "\n" + key, out var claim);
        if (!_link.Available)
            return;
        string value = "";
        long lifetimeMs = 0;
        if (answer is not null)
        {
            lifetimeMs = (long)(IdempotencyJournal.Lifetime.TotalMilliseconds - (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - answer.AtUnixMs));
            if (lifetimeMs <= 0)
                return;
            value = JsonSerializer.Serialize(answer, ClusterJsonContext.Default.IdempotencyRecord);
        }
        else if (claim is null)
        {
            return; // nothing claimed, nothing kept
        }
        try
        {
            await _link.RunAsync(CompleteScript, [KeyOf(token, key)], [claim ?? "", value, lifetimeMs]).ConfigureAwait(false);
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // This node's journal keeps the answer; the claim in Redis expires by itself.
        }
        catch (RedisException e)
        {
            // The message is queued and the journal keeps the answer: the client gets it, not an error.
            _log.Warn($"cluster: the answer for idempotency key {key} (token {token}) was not kept for the fleet: {e.Message}");
        }
    }
}
