using NativeRelay.Cluster;
using NativeRelay.Config;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Cluster;

/// <summary>
/// The fleet's connection limits against a real redis-server: leases taken by several nodes at
/// once never exceed the limit, a node that stops renewing (killed) gives its leases back within
/// the lease time, and without Redis each node keeps to its share.
/// </summary>
public sealed class ConnectionLeasesTests : IAsyncLifetime
{
    private TestRedis _redis = null!;
    private readonly Log _log = new(TextWriter.Null);
    private readonly List<RedisLink> _links = new();
    private readonly List<ConnectionLeases> _nodes = new();
    // Posted wakes run on the thread pool (a delivery loop would run them on its own thread).
    private readonly SynchronizationContext _pool = new();

    public async Task InitializeAsync() => _redis = await TestRedis.StartAsync();

    public async Task DisposeAsync()
    {
        foreach (var node in _nodes)
            await node.HaltAsync();
        foreach (var link in _links)
            await link.DisposeAsync();
        await _redis.DisposeAsync();
        _log.Dispose();
    }

    private async Task<ConnectionLeases> NodeAsync(string name, int leaseSeconds = 30, int liveNodes = 1)
    {
        var settings = ClusterSettings.Validate(new ClusterOptions
        {
            Redis = _redis.ConnectionString, Node = name, HeartbeatSeconds = 1, LeaseSeconds = leaseSeconds,
        }, "relay.test")!;
        var link = await RedisLink.ConnectAsync(settings, _log);
        _links.Add(link);
        var leases = new ConnectionLeases(link, () => liveNodes, _log);
        leases.Start();
        _nodes.Add(leases);
        return leases;
    }

    private async Task<int> HeldInRedisAsync(string key) =>
        int.Parse(await _redis.CommandAsync("ZCARD", "nativerelay:conn:" + key));

    /// <summary>A lane: asks for a lease until it has one (woken by the lease set), or the deadline.</summary>
    private async Task<bool> UseAsync(LeaseSet set, DateTime until)
    {
        // Not disposed: the lease set may still post a wake after the lane has its lease (or gave
        // up), and a Release on a disposed semaphore in a thread-pool item ends the process.
        var woken = new SemaphoreSlim(0);
        Action wake = () => woken.Release();
        while (DateTime.UtcNow < until)
        {
            if (set.TryUse(_pool, wake))
                return true;
            await woken.WaitAsync(TimeSpan.FromMilliseconds(500));
        }
        return false;
    }

    [Fact]
    public async Task Three_nodes_opening_at_once_never_hold_more_connections_than_the_limit()
    {
        const int limit = 4;
        const string key = "path:default|sink";
        var sets = new List<LeaseSet>();
        foreach (var name in new[] { "a", "b", "c" })
            sets.Add((await NodeAsync(name)).Connections(key, limit));
        int open = 0, most = 0, connections = 0;
        var until = DateTime.UtcNow.AddSeconds(4);
        // Three lanes per node, each opening a "connection" as soon as it gets a lease, holding it
        // a moment and closing it: nine wanting four.
        var lanes = sets.SelectMany(set => Enumerable.Range(0, 3).Select(lane => Task.Run(async () =>
        {
            var random = new Random(lane);
            while (DateTime.UtcNow < until)
            {
                if (!await UseAsync(set, until))
                    break;
                int now = Interlocked.Increment(ref open);
                Interlocked.Increment(ref connections);
                int seen;
                while ((seen = Volatile.Read(ref most)) < now && Interlocked.CompareExchange(ref most, now, seen) != seen)
                {
                }
                await Task.Delay(random.Next(5, 40));
                Interlocked.Decrement(ref open); // closed, then its lease goes back
                set.Release();
            }
        }))).ToArray();
        var samples = new List<int>();
        while (!lanes.All(t => t.IsCompleted))
        {
            samples.Add(await HeldInRedisAsync(key));
            await Task.Delay(20);
        }
        await Task.WhenAll(lanes);

        Assert.True(most <= limit, $"{most} connections open at once over the fleet; the limit is {limit}");
        Assert.Equal(limit, most); // contended: nine lanes wanted four slots, and got all four
        Assert.All(samples, n => Assert.InRange(n, 0, limit));
        Assert.True(connections > 3 * limit, $"only {connections} connections in all: slots were not passed on");
        Assert.True(_nodes.Sum(n => n.Refused) > 0, "no node was ever refused a lease");
        Assert.True(_nodes.All(n => n.Acquired > 0), "every node got leases");
    }

    [Fact]
    public async Task A_node_that_stops_renewing_gives_its_leases_back_within_the_lease_time()
    {
        const string key = "path:default|dead";
        var killed = await NodeAsync("killed", leaseSeconds: 3);
        var survivor = await NodeAsync("survivor", leaseSeconds: 3);
        var mine = killed.Connections(key, 2);
        var theirs = survivor.Connections(key, 2);
        var deadline = DateTime.UtcNow.AddSeconds(20);
        Assert.True(await UseAsync(mine, deadline));
        Assert.True(await UseAsync(mine, deadline));
        Assert.Equal(2, await HeldInRedisAsync(key));

        // Held past the lease time: the renewals keep them, and the other node is refused.
        var woken = new SemaphoreSlim(0); // not disposed, as in UseAsync
        Action wake = () => woken.Release();
        var refusedUntil = DateTime.UtcNow.AddSeconds(4.5);
        while (DateTime.UtcNow < refusedUntil)
        {
            Assert.False(theirs.TryUse(_pool, wake), "a third lease while two are held and renewed");
            await woken.WaitAsync(TimeSpan.FromMilliseconds(300));
        }
        Assert.True(killed.Renewals > 0);
        Assert.Equal(2, await HeldInRedisAsync(key));

        // Killed: no more renewals, nothing given back.
        await killed.HaltAsync();
        double stoppedAt = await RedisSecondsAsync();
        Assert.True(await UseAsync(theirs, DateTime.UtcNow.AddSeconds(15)), "the dead node's lease came back");
        double gotAt = await RedisSecondsAsync();
        // Within the lease time after the last renewal (Redis's clock), and the survivor asks
        // again at its next tick, a second at most (plus a second for a loaded machine).
        Assert.True(gotAt - stoppedAt <= 3 + 1 + 1, $"the lease came back {gotAt - stoppedAt:0.0} s after the node stopped");
        var members = await _redis.CommandAsync("ZRANGE", "nativerelay:conn:" + key, "0", "-1");
        Assert.Contains("survivor:", members);
        Assert.DoesNotContain("killed:", members); // both lapsed (renewed together, so lapsing together)

    }

    private async Task<double> RedisSecondsAsync()
    {
        var parts = (await _redis.CommandAsync("TIME")).Split('\n');
        return long.Parse(parts[0]) + long.Parse(parts[1]) / 1e6;
    }

    [Fact]
    public async Task Without_redis_a_node_opens_its_share_at_once_and_takes_leases_again_when_redis_is_back()
    {
        const string key = "path:default|away";
        var node = await NodeAsync("a", liveNodes: 2);
        var set = node.Connections(key, 5);
        Assert.True(await UseAsync(set, DateTime.UtcNow.AddSeconds(10)));
        set.Release();

        await _redis.StopAsync();
        await Waits.UntilAsync(() => !_links[0].Available, TimeSpan.FromSeconds(10), "the node sees Redis gone");
        // Its share of 5 over 2 live nodes is 2, granted without asking anyone.
        Action wake = () => { };
        Assert.True(set.TryUse(_pool, wake));
        Assert.True(set.TryUse(_pool, wake));
        Assert.False(set.TryUse(_pool, wake));
        Assert.Equal(0, set.Unleased); // while Redis is away the share is the rule

        await _redis.StartAgainAsync();
        await Waits.UntilAsync(() => node.Shared, TimeSpan.FromSeconds(30), "the node takes the fleet's leases again");
        // The two connections opened without Redis get leases (there is room), so none has to close.
        await Waits.UntilAsync(() => set.Unleased == 0 && set.Held == 2, TimeSpan.FromSeconds(10), "leases for the connections opened without Redis");
        Assert.Equal(2, await HeldInRedisAsync(key));
        Assert.True(await UseAsync(set, DateTime.UtcNow.AddSeconds(10)), "a new connection under the fleet's limit");
        Assert.Equal(3, await HeldInRedisAsync(key));
        set.Release();
        set.Release();
        set.Release();
        int held = -1;
        for (int i = 0; i < 100 && (held = await HeldInRedisAsync(key)) != 0; i++)
            await Task.Delay(100);
        Assert.Equal(0, held); // closed connections gave their leases back
    }

    [Fact]
    public async Task A_relays_deliveries_keep_to_the_fleets_connection_limit_and_take_the_fleets_rate()
    {
        using var dir = new TempDir("nativerelay-fleet-shaping");
        string shaping = Path.Combine(dir.Path, "shaping.json");
        File.WriteAllText(shaping, """{ "default": { "maxConnections": 2, "messagesPerSecond": 50 } }""");
        await using var world = await DeliveryWorld.StartAsync(o => o.Traffic.Shaping = shaping);
        var settings = ClusterSettings.Validate(new ClusterOptions { Redis = _redis.ConnectionString, Node = "relay" }, "relay.test")!;
        var link = await RedisLink.ConnectAsync(settings, _log);
        _links.Add(link);
        await using var fleet = new SharedLimits(link, () => 2, _log);
        world.Scheduler.Traffic.Shared = fleet; // before the first job makes the path's shaping state

        // Another node of the fleet holds one of the site's two connections throughout.
        var other = (await NodeAsync("other")).Connections("path:default|mx.dest.test", 2);
        Assert.True(await UseAsync(other, DateTime.UtcNow.AddSeconds(10)));

        var peer = world.Peers[0];
        peer.DataDelay = TimeSpan.FromMilliseconds(30);
        for (int i = 0; i < 30; i++)
            await world.QueueAsync(DeliveryWorld.Envelope("alice@origin.test", [$"r{i}@dest.test"]), MessageText.Simple($"f{i}@test"));
        // The rate's state lives in Redis while tokens are being taken; it expires a second after
        // the last batch falls due, so it is looked for during the deliveries, not after them.
        bool rateStateInRedis = false;
        await Waits.UntilAsync(async () =>
        {
            rateStateInRedis |= await _redis.CommandAsync("HGET", "nativerelay:rate:path:default|mx.dest.test", "s") != "(nil)";
            return peer.Messages.Count >= 30;
        }, Waits.Delivery, "30 messages");

        Assert.Equal(1, peer.MaxConcurrentConnections); // the fleet's limit of 2, one held elsewhere
        Assert.True(fleet.Leases.Acquired >= 1);
        Assert.True(fleet.Rates.TokensSpent >= 30, $"{fleet.Rates.TokensSpent} tokens of the fleet's rate for 30 messages");
        Assert.Equal(0, fleet.Rates.FallbackSpent);
        Assert.True(rateStateInRedis, "the path's rate state was kept in Redis");
    }
}
