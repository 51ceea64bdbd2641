using System.Globalization;
using NativeRelay.Telemetry;
using StackExchange.Redis;

namespace NativeRelay.Cluster;

/// <summary>What a node says of itself in each heartbeat.</summary>
public sealed record NodeFacts(long Active, long Deferred, long Held, string Version);

/// <summary>One node as <c>cluster status</c> shows it.</summary>
public sealed record NodeStatus(string Name, bool Live, long LastSeenUnixMs, long StartedUnixMs, string Version,
    long Active, long Deferred, long Held, bool Degraded);

/// <summary>
/// The fleet's members: every node writes a heartbeat (a hash with its queue sizes and version,
/// expiring after three heartbeats) and its name into a sorted set scored by the time of the
/// heartbeat (Redis's clock, so the nodes' clocks need not agree). The number of live nodes is
/// the divisor of every limit's fallback share: with Redis away, a node uses the last count it saw.
/// </summary>
public sealed class ClusterMembership : IAsyncDisposable
{
    // KEYS[1] the members sorted set, KEYS[2] this node's hash. ARGV: node, expiry ms, then field/value pairs.
    // Returns {now ms, live count}. One round trip per heartbeat.
    private static readonly RedisScript Beat = new("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local expiry = tonumber(ARGV[2])
        redis.call('ZADD', KEYS[1], now, ARGV[1])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10 * expiry)
        local fields = {'seen', now}
        for i = 3, #ARGV, 2 do
          fields[#fields + 1] = ARGV[i]
          fields[#fields + 1] = ARGV[i + 1]
        end
        redis.call('HSET', KEYS[2], unpack(fields))
        redis.call('PEXPIRE', KEYS[2], 10 * expiry)
        local live = redis.call('ZCOUNT', KEYS[1], now - expiry, '+inf')
        return {now, live}
        """);

    private readonly RedisLink _link;
    private readonly Func<NodeFacts> _facts;
    private readonly Log _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly long _startedUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
    private Task? _loop;
    private int _liveNodes = 1;

    public ClusterMembership(RedisLink link, Func<NodeFacts> facts, Log log)
    {
        _link = link;
        _facts = facts;
        _log = log;
        ClusterMetrics.Nodes.SetSource(() => LiveNodes);
    }

    private ClusterSettings Settings => _link.Settings;

    /// <summary>Live nodes as last seen (at least 1: this one). The fallback share of a limit is limit / this.</summary>
    public int LiveNodes => Math.Max(1, Volatile.Read(ref _liveNodes));

    // One hash tag for both: the heartbeat script writes the two keys at once, which Redis Cluster
    // allows only for keys of one slot.
    internal RedisKey MembersKey => _link.Key("{nodes}");

    internal RedisKey NodeKey(string node) => _link.Key("{nodes}:" + node);

    /// <summary>Sends the first heartbeat (when Redis answers) and keeps beating until disposed.</summary>
    public async Task StartAsync()
    {
        await BeatOnceAsync().ConfigureAwait(false);
        _loop = Task.Run(() => LoopAsync(_stop.Token));
    }

    /// <summary>One heartbeat now (also after Redis comes back, so the fleet sees the node at once).</summary>
    public async Task BeatOnceAsync()
    {
        NodeFacts facts;
        try
        {
            facts = _facts();
        }
        catch (Exception e) when (e is InvalidOperationException or ObjectDisposedException)
        {
            facts = new NodeFacts(0, 0, 0, RelayVersion());
        }
        var values = new RedisValue[]
        {
            Settings.Node, (long)Settings.NodeExpiry.TotalMilliseconds,
            "started", _startedUnixMs, "version", facts.Version,
            "active", facts.Active, "deferred", facts.Deferred, "held", facts.Held,
            "degraded", _link.Available ? 0 : 1,
        };
        try
        {
            var result = (RedisResult[])(await _link.RunAsync(Beat, [MembersKey, NodeKey(Settings.Node)], values).ConfigureAwait(false))!;
            int live = (int)(long)result[1];
            if (Interlocked.Exchange(ref _liveNodes, live) != live)
                _log.Info($"cluster: {live} live node(s) in the fleet");
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // Degraded: the last count stands (RedisLink logged the change).
        }
    }

    private async Task LoopAsync(CancellationToken stop)
    {
        using var timer = new PeriodicTimer(Settings.Heartbeat);
        try
        {
            while (await timer.WaitForNextTickAsync(stop).ConfigureAwait(false))
            {
                try
                {
                    await BeatOnceAsync().ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    _log.Error($"cluster: heartbeat failed: {e.Message}");
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Every node Redis knows of (live or gone within the last ten heartbeat expiries), by name.</summary>
    public async Task<IReadOnlyList<NodeStatus>> NodesAsync()
    {
        var members = await _link.CallAsync(db => db.SortedSetRangeByRankWithScoresAsync(MembersKey)).ConfigureAwait(false);
        var hashes = await _link.CallAsync(async db =>
        {
            var batch = db.CreateBatch();
            var tasks = members.Select(m => batch.HashGetAllAsync(NodeKey(m.Element!))).ToArray();
            batch.Execute();
            return await Task.WhenAll(tasks).ConfigureAwait(false);
        }).ConfigureAwait(false);
        long now = members.Length == 0 ? 0 : (long)members.Max(m => m.Score);
        long expiry = (long)Settings.NodeExpiry.TotalMilliseconds;
        var list = new List<NodeStatus>();
        for (int i = 0; i < members.Length; i++)
        {
            var fields = hashes[i].ToDictionary(h => (string)h.Name!, h => (string?)h.Value ?? "");
            long seen = (long)members[i].Score;
            list.Add(new NodeStatus((string)members[i].Element!, seen >= now - expiry && fields.Count > 0, seen,
                Long(fields, "started"), fields.GetValueOrDefault("version", "?"),
                Long(fields, "active"), Long(fields, "deferred"), Long(fields, "held"), Long(fields, "degraded") == 1));
        }
        list.Sort(static (a, b) => string.CompareOrdinal(a.Name, b.Name));
        return list;

        static long Long(Dictionary<string, string> fields, string name) =>
            fields.TryGetValue(name, out var text) && long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : 0;
    }

    /// <summary>The version string a node reports (the assembly's informational version).</summary>
    public static string RelayVersion() =>
        typeof(ClusterMembership).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion ?? "unknown";

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        if (_loop is not null)
            await _loop.ConfigureAwait(false);
        ClusterMetrics.Nodes.SetSource(null);
        // Leave the fleet at once (a clean stop): the others' shares grow without waiting for expiry.
        if (_link.Available)
        {
            try
            {
                await _link.CallAsync(async db =>
                {
                    await db.SortedSetRemoveAsync(MembersKey, Settings.Node).ConfigureAwait(false);
                    return await db.KeyDeleteAsync(NodeKey(Settings.Node)).ConfigureAwait(false);
                }).ConfigureAwait(false);
            }
            catch (Exception e) when (RedisLink.IsUnavailable(e))
            {
            }
        }
        _stop.Dispose();
    }
}
