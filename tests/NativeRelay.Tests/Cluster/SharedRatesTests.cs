using System.Diagnostics;
using System.Globalization;
using NativeRelay.Api;
using NativeRelay.Cluster;
using NativeRelay.Config;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Cluster;

/// <summary>
/// The fleet's message rates against a real redis-server: several nodes (each its own
/// connection) taking tokens at once, the batch per round trip, the local share while Redis is
/// away and the return to the fleet's rate.
/// </summary>
public sealed class SharedRatesTests : IAsyncLifetime
{
    private TestRedis _redis = null!;
    private readonly Log _log = new(TextWriter.Null);
    private readonly List<RedisLink> _links = new();

    public async Task InitializeAsync() => _redis = await TestRedis.StartAsync();

    public async Task DisposeAsync()
    {
        foreach (var link in _links)
            await link.DisposeAsync();
        await _redis.DisposeAsync();
        _log.Dispose();
    }

    private async Task<FleetRates> NodeAsync(string name, int liveNodes = 1, int rateBatch = 20)
    {
        var settings = ClusterSettings.Validate(new ClusterOptions
        {
            Redis = _redis.ConnectionString, Node = name, RateBatch = rateBatch, HeartbeatSeconds = 1, LeaseSeconds = 5,
        }, "relay.test")!;
        var link = await RedisLink.ConnectAsync(settings, _log);
        _links.Add(link);
        return new FleetRates(link, () => liveNodes, _log);
    }

    /// <summary>Redis's own clock, in seconds (the nodes' clocks play no part in the limit).</summary>
    private async Task<double> RedisTimeAsync()
    {
        var parts = (await _redis.CommandAsync("TIME")).Split('\n');
        return long.Parse(parts[0], CultureInfo.InvariantCulture) + long.Parse(parts[1], CultureInfo.InvariantCulture) / 1e6;
    }

    /// <summary>Takes tokens as fast as they come until the deadline; returns how many.</summary>
    private static async Task<long> DrainAsync(FleetRate rate, DateTime until)
    {
        long taken = 0;
        using var cancel = new CancellationTokenSource();
        while (DateTime.UtcNow < until)
        {
            if (rate.TryTake(Stopwatch.GetTimestamp(), out _))
            {
                taken++;
                continue;
            }
            cancel.CancelAfter(TimeSpan.FromSeconds(2));
            await rate.WhenReady(cancel.Token);
            if (!cancel.TryReset())
                break;
        }
        return taken;
    }

    [Fact]
    public async Task Three_nodes_taking_at_once_hold_the_rate_within_one_batch()
    {
        const double perSecond = 200;
        var nodes = new[] { await NodeAsync("a"), await NodeAsync("b"), await NodeAsync("c") };
        var rates = nodes.Select(n => n.Rate("path:default|example", perSecond, null, null, null)!).ToArray();
        int batch = rates[0].Batch;
        Assert.Equal(20, batch); // a fifth of a second of 200/s is 40; cluster.rateBatch caps it at 20

        double start = await RedisTimeAsync();
        var until = DateTime.UtcNow.AddSeconds(3);
        var taken = await Task.WhenAll(rates.Select(r => Task.Run(() => DrainAsync(r, until))));
        double elapsed = await RedisTimeAsync() - start;

        long granted = nodes.Sum(n => n.TokensGranted);
        long spent = taken.Sum();
        // A batch falls due at the limit's next free slot and is spent from then on: the fleet
        // never spends ahead of the rate by more than one batch. (A batch may be handed out up
        // to a batch's time before it falls due: granted may be one batch more.)
        Assert.True(spent <= perSecond * elapsed + batch + 1,
            $"spent {spent} tokens in {elapsed:0.000} s of Redis time at {perSecond}/s (batch {batch})");
        Assert.True(granted <= perSecond * elapsed + 2 * batch + 1,
            $"granted {granted} tokens in {elapsed:0.000} s of Redis time at {perSecond}/s (batch {batch})");
        for (int i = 0; i < nodes.Length; i++)
        {
            Assert.True(taken[i] <= nodes[i].TokensGranted, $"node {i} spent {taken[i]} of {nodes[i].TokensGranted} granted");
            Assert.Equal(taken[i], nodes[i].TokensSpent);
        }
        // The limit was contended (Redis said "wait"), and more than one batch went out.
        Assert.True(nodes.Sum(n => n.RoundTrips) > nodes.Count(n => n.TokensGranted > 0), "no node was ever told to wait");
        Assert.True(granted > batch, $"only {granted} tokens granted");
        Assert.Equal(0, nodes.Sum(n => n.FallbackSpent));
    }

    [Fact]
    public async Task At_full_speed_a_node_makes_at_most_one_round_trip_per_twenty_messages()
    {
        var node = await NodeAsync("a");
        var rate = node.Rate("path:default|fast", 1_000_000, null, null, null)!;
        Assert.Equal(20, rate.Batch);
        long taken = 0;
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        for (int i = 0; i < 200_000 && taken < 4000; i++)
        {
            if (rate.TryTake(Stopwatch.GetTimestamp(), out _))
                taken++;
            else
                await rate.WhenReady(cancel.Token);
        }
        Assert.Equal(4000, taken);
        // One round trip per batch of 20, give or take the first one and a prefetch in flight at the end.
        Assert.True(node.RoundTrips * 20 <= taken + 2 * 20, $"{node.RoundTrips} round trips for {taken} messages");
        Assert.True(node.RoundTrips >= taken / 20, $"{node.RoundTrips} round trips for {taken} messages: tokens from nowhere?");
    }

    [Fact]
    public async Task Without_redis_a_node_keeps_to_its_share_without_waiting_and_takes_the_fleets_rate_again_when_redis_is_back()
    {
        var node = await NodeAsync("a", liveNodes: 2);
        var rate = node.Rate("path:default|share", 10, null, null, null)!;
        Assert.True(await TakeOneAsync(rate), "a token from Redis");
        Assert.True(node.TokensGranted > 0);

        await _redis.StopAsync();
        var link = _links[0];
        // The link notices at once (the connection drops), or the next call does.
        for (int i = 0; i < 100 && node.Shared; i++)
        {
            rate.TryTake(Stopwatch.GetTimestamp(), out _);
            await Task.Delay(50);
        }
        Assert.False(node.Shared);
        Assert.False(link.Available);

        // Its share is 10/s over 2 live nodes: 5/s, one every 0.2 s. Asked every 10 ms over one
        // second (the node's own clock, given here), it lets 5 or 6 through; the answer never waits.
        long t0 = Stopwatch.GetTimestamp() + Stopwatch.Frequency; // clear of any earlier reservation
        long fallbackBefore = node.FallbackSpent, spentBefore = node.TokensSpent;
        int allowed = 0;
        long lastReady = 0;
        for (int i = 0; i < 100; i++)
        {
            long now = t0 + i * Stopwatch.Frequency / 100;
            if (rate.TryTake(now, out long ready))
                allowed++;
            else
                lastReady = ready - now;
        }
        // (The rest of the batch taken before Redis went is spent first: granted, so the fleet's.)
        Assert.InRange(node.FallbackSpent - fallbackBefore, 5, 6);
        // At most what a node can hold: a prefetch tops the hand up when half a batch is left, so one and a half batches.
        Assert.InRange(node.TokensSpent - spentBefore, 0, rate.Batch + rate.Batch / 2);
        Assert.Equal(allowed, node.FallbackSpent - fallbackBefore + node.TokensSpent - spentBefore);
        Assert.InRange(lastReady, 1, Stopwatch.Frequency / 5);

        await _redis.StartAgainAsync();
        await Waits.UntilAsync(() => link.Available, TimeSpan.FromSeconds(30), "the node reconnects to Redis");
        await Waits.UntilAsync(() => node.Shared, TimeSpan.FromSeconds(5), "the rates are the fleet's again");
        long grantedBefore = node.TokensGranted;
        Assert.True(await TakeOneAsync(rate), "a token from Redis again");
        Assert.True(node.TokensGranted > grantedBefore, "the token came from Redis, not the local share");
        Assert.NotEqual("(nil)", await _redis.CommandAsync("HGET", "nativerelay:rate:path:default|share", "s"));
    }

    private static async Task<bool> TakeOneAsync(FleetRate rate)
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        for (int i = 0; i < 100; i++)
        {
            if (rate.TryTake(Stopwatch.GetTimestamp(), out _))
                return true;
            await rate.WhenReady(cancel.Token);
        }
        return false;
    }

    [Fact]
    public async Task Token_request_rates_are_the_fleets_and_the_first_request_is_not_refused()
    {
        var a = new SharedLimits((await NodeAsync("a")).Link, () => 2, _log);
        var b = new SharedLimits((await NodeAsync("b")).Link, () => 2, _log);
        await using var _a = a;
        await using var _b = b;
        var limiters = new[] { new TokenRateLimiter { Shared = a }, new TokenRateLimiter { Shared = b } };
        double start = await RedisTimeAsync();
        var (first, _) = await limiters[0].TakeAsync("mailer", 20);
        Assert.True(first, "the first request waits for the token being fetched instead of being refused");
        // The fleet's bucket holds a second of requests, as one relay's does: a burst of them goes
        // at once, whichever node each request reaches (a node holds no batch the other could use).
        for (int i = 1; i < 10; i++)
        {
            var (ok, _) = await limiters[i % 2].TakeAsync("mailer", 20);
            Assert.True(ok, $"request {i} of a burst of 10 at 20/s was refused");
        }
        long allowed = 10;
        var until = DateTime.UtcNow.AddSeconds(2);
        for (int i = 0; i < 100_000 && DateTime.UtcNow < until; i++)
        {
            var (ok, retry) = await limiters[i % 2].TakeAsync("mailer", 20);
            if (ok)
                allowed++;
            else
                Assert.True(retry >= 1, "a refusal says when to come back");
        }
        double elapsed = await RedisTimeAsync() - start;
        // 20 per second over both nodes, plus the bucket's second of burst, plus the token each node fetches ahead.
        Assert.True(allowed <= 20 * elapsed + 20 + 2, $"{allowed} requests allowed in {elapsed:0.00} s at 20/s");
        Assert.True(a.Rates.TokensGranted > 0 && b.Rates.TokensGranted > 0, "both nodes took from the fleet's bucket");
        Assert.Equal(0, a.Rates.FallbackSpent + b.Rates.FallbackSpent);
    }

    [Fact]
    public async Task A_relay_without_redis_keeps_delivering_at_its_share_and_takes_the_fleets_limits_again_when_redis_is_back()
    {
        using var dir = new TempDir("nativerelay-fleet-shaping");
        string shaping = Path.Combine(dir.Path, "shaping.json");
        File.WriteAllText(shaping, """{ "default": { "maxConnections": 4, "messagesPerSecond": 40 } }""");
        await using var world = await DeliveryWorld.StartAsync(o => o.Traffic.Shaping = shaping);
        var link = (await NodeAsync("relay")).Link;
        await using var fleet = new SharedLimits(link, () => 2, _log);
        world.Scheduler.Traffic.Shared = fleet;
        var peer = world.Peers[0];
        peer.DataDelay = TimeSpan.FromMilliseconds(20);

        await _redis.StopAsync();
        await Waits.UntilAsync(() => !link.Available, TimeSpan.FromSeconds(10), "the node sees Redis gone");
        for (int i = 0; i < 20; i++)
            await world.QueueAsync(DeliveryWorld.Envelope("alice@origin.test", [$"r{i}@dest.test"]), MessageText.Simple($"away{i}@test"));
        await peer.WaitUntilAsync(() => peer.Messages.Count >= 20, Waits.Delivery, "20 messages delivered without Redis");
        // Every message went on this node's share (40/s over 2 nodes), none waited for Redis;
        // its share of the 4 connections is 2.
        // (A slot of the share taken for a message another connection sent is not given back.)
        Assert.InRange(fleet.Rates.FallbackSpent, 20, 24);
        Assert.Equal(0, fleet.Rates.TokensGranted);
        Assert.InRange(peer.MaxConcurrentConnections, 1, 2);

        await _redis.StartAgainAsync();
        await Waits.UntilAsync(() => link.Available, TimeSpan.FromSeconds(30), "the node reconnects to Redis");
        for (int i = 0; i < 10; i++)
            await world.QueueAsync(DeliveryWorld.Envelope("alice@origin.test", [$"b{i}@dest.test"]), MessageText.Simple($"back{i}@test"));
        await peer.WaitUntilAsync(() => peer.Messages.Count >= 30, Waits.Delivery, "10 more with Redis back");
        Assert.True(fleet.Rates.TokensGranted >= 10, $"{fleet.Rates.TokensGranted} tokens from Redis for the last 10 messages");
        Assert.True(fleet.Leases.Acquired >= 1, "connections under the fleet's leases again");
    }
}
