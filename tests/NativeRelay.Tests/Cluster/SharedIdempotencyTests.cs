using NativeRelay.Api;
using NativeRelay.Cluster;
using NativeRelay.Config;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Cluster;

/// <summary>
/// HTTP idempotency keys held by a fleet, through a real redis-server: each node has its own
/// ClusterNode and its own idempotency journal in its own directory; a request is what
/// InjectionService does with a key (begin, inject when first, complete with the answer).
/// </summary>
public sealed class SharedIdempotencyTests : IAsyncLifetime
{
    private TestRedis _redis = null!;
    private readonly List<ClusterNode> _clusters = new();
    private readonly List<TempDir> _dirs = new();
    private readonly Log _log = new(TextWriter.Null);
    private int _injected;

    public async Task InitializeAsync() => _redis = await TestRedis.StartAsync();

    public async Task DisposeAsync()
    {
        foreach (var c in _clusters)
            await c.DisposeAsync();
        await _redis.DisposeAsync();
        foreach (var d in _dirs)
            d.Dispose();
        _log.Dispose();
    }

    private async Task<(ClusterNode Cluster, IdempotencyJournal Journal)> StartNodeAsync(string name)
    {
        var dir = new TempDir("nativerelay-cluster");
        _dirs.Add(dir);
        var settings = ClusterSettings.Validate(new ClusterOptions { Redis = _redis.ConnectionString, Node = name, HeartbeatSeconds = 1, LeaseSeconds = 5 }, "relay.test")!;
        var cluster = await ClusterNode.StartAsync(settings, () => new NodeFacts(0, 0, 0, "test"), _log);
        _clusters.Add(cluster);
        var journal = IdempotencyJournal.Open(dir.Path, DateTimeOffset.UtcNow);
        journal.Shared = cluster.ShareIdempotency(_log);
        return (cluster, journal);
    }

    /// <summary>One request with the key: injects (counted) when it is the first, after <paramref name="injecting"/> completes.</summary>
    private async Task<(string Body, bool Replayed)> RequestAsync(IdempotencyJournal journal, string key, Task? injecting = null, int status = 202)
    {
        var now = DateTimeOffset.UtcNow;
        var kept = await journal.BeginAsync("sender", key, now);
        if (kept is not null)
            return (kept.Body, true);
        IdempotencyRecord? answer = null;
        try
        {
            if (injecting is not null)
                await injecting;
            int n = Interlocked.Increment(ref _injected);
            answer = new IdempotencyRecord { Token = "sender", Key = key, AtUnixMs = now.ToUnixTimeMilliseconds(), Status = status, Body = $"{{\"message_ids\":[\"id{n}\"]}}" };
            return (answer.Body, false);
        }
        finally
        {
            await journal.CompleteAsync("sender", key, answer is { Status: < 500 } ? answer : null);
        }
    }

    [Fact]
    public async Task The_same_key_sent_to_two_nodes_at_once_injects_once_and_every_node_answers_with_the_first_answer()
    {
        var (_, a) = await StartNodeAsync("a");
        var (_, b) = await StartNodeAsync("b");
        var (_, c) = await StartNodeAsync("c");

        var firstMayFinish = new TaskCompletionSource();
        var first = RequestAsync(a, "order-42", firstMayFinish.Task);
        await Waits.UntilAsync(() => _redis.CommandAsync("EXISTS", "nativerelay:idem:6:sender:order-42").Result == "1", TimeSpan.FromSeconds(5),
            "node a claims the key in Redis");
        var second = RequestAsync(b, "order-42");
        await Task.Delay(300);
        Assert.False(second.IsCompleted); // waits for node a's answer
        firstMayFinish.SetResult();

        var (body, replayed) = await first;
        Assert.False(replayed);
        var (bodyB, replayedB) = await second;
        Assert.True(replayedB);
        Assert.Equal(body, bodyB);
        var (bodyC, replayedC) = await RequestAsync(c, "order-42");
        Assert.True(replayedC);
        Assert.Equal(body, bodyC);
        Assert.Equal(1, _injected);
        Assert.Contains("id1", await _redis.CommandAsync("GET", "nativerelay:idem:6:sender:order-42"));
        // Kept as long as the journal keeps an answer (a day), not forever.
        Assert.InRange(long.Parse(await _redis.CommandAsync("PTTL", "nativerelay:idem:6:sender:order-42")), 23 * 3600_000L, 24 * 3600_000L);

        // Another key is another request.
        Assert.False((await RequestAsync(b, "order-43")).Replayed);
        Assert.Equal(2, _injected);
    }

    [Fact]
    public async Task A_request_that_kept_nothing_gives_the_key_back_to_the_fleet()
    {
        var (_, a) = await StartNodeAsync("a");
        var (_, b) = await StartNodeAsync("b");
        await RequestAsync(a, "retry-me", status: 503); // a server error: not kept, the client may retry
        Assert.Equal("0", await _redis.CommandAsync("EXISTS", "nativerelay:idem:6:sender:retry-me"));
        var (_, replayed) = await RequestAsync(b, "retry-me");
        Assert.False(replayed);
        Assert.Equal(2, _injected);
    }

    [Fact]
    public async Task With_Redis_away_each_node_decides_from_its_own_journal_and_nothing_fails()
    {
        var (clusterA, a) = await StartNodeAsync("a");
        var (_, b) = await StartNodeAsync("b");
        await _redis.StopAsync();
        await Waits.UntilAsync(() => clusterA.Degraded, TimeSpan.FromSeconds(30), "node a sees Redis away");

        var (body, replayed) = await RequestAsync(a, "offline");
        Assert.False(replayed);
        var again = await RequestAsync(a, "offline"); // the node's own journal still holds
        Assert.True(again.Replayed);
        Assert.Equal(body, again.Body);
        Assert.Equal(1, _injected);
        Assert.False((await RequestAsync(b, "other")).Replayed);
    }
}
