using NativeRelay.Cluster;
using NativeRelay.Config;
using NativeRelay.Control;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Cluster;

/// <summary>The control socket's cluster-status answer (cluster status, queue stats --cluster) against a real redis-server.</summary>
public sealed class ClusterStatusTests : IAsyncLifetime
{
    private TestRedis _redis = null!;

    public async Task InitializeAsync() => _redis = await TestRedis.StartAsync();

    public async Task DisposeAsync() => await _redis.DisposeAsync();

    private ClusterSettings Settings(string node) => ClusterSettings.Validate(new ClusterOptions
    {
        Redis = _redis.ConnectionString + ",user=default", Node = node, HeartbeatSeconds = 1, LeaseSeconds = 5, TimeoutMilliseconds = 300,
    }, "relay.test")!;

    [Fact]
    public async Task Status_lists_the_nodes_and_with_redis_away_says_so_and_shows_the_list_as_last_read()
    {
        using var log = new Log(TextWriter.Null);
        await using var a = await ClusterNode.StartAsync(Settings("a"), () => new NodeFacts(1, 2, 3, "v1"), log);
        await using var b = await ClusterNode.StartAsync(Settings("b"), () => new NodeFacts(4, 5, 6, "v2"), log);
        await a.Membership.BeatOnceAsync();
        var commands = new ClusterCommands(a);

        var up = (await commands.StatusAsync()).Cluster!;
        Assert.Equal("a", up.Node);
        Assert.Equal(_redis.ConnectionString + ",user=default", up.Redis);
        Assert.False(up.Degraded);
        Assert.Equal(2, up.LiveNodes);
        Assert.Equal(1, up.HeartbeatSeconds);
        Assert.Equal(5, up.LeaseSeconds);
        Assert.Null(up.NodesError);
        Assert.Equal(["a", "b"], up.Nodes.Select(n => n.Name));
        var nb = up.Nodes[1];
        Assert.True(nb.Live);
        Assert.Equal((4, 5, 6, "v2"), (nb.Active, nb.Deferred, nb.Held, nb.Version));

        await _redis.StopAsync();
        await Waits.UntilAsync(() => a.Degraded, TimeSpan.FromSeconds(10), "node a sees Redis go");
        var down = await commands.StatusAsync();
        Assert.True(down.Ok);
        var c = down.Cluster!;
        Assert.True(c.Degraded);
        Assert.Equal(2, c.LiveNodes); // the count last seen: the divisor of the fallback shares
        Assert.StartsWith("Redis is unreachable: ", c.NodesError);
        Assert.DoesNotContain(" - ", c.NodesError); // the client library's first sentence, not its dump
        Assert.Equal(["a", "b"], c.Nodes.Select(n => n.Name));
        Assert.NotNull(c.NodesFromUnixMs);
    }

    [Fact]
    public void A_password_given_anyway_is_never_shown()
    {
        Assert.Equal("r1:6379,password=***,ssl=true", RedisConnectionString.Redact("r1:6379,password=hunter2,ssl=true"));
        Assert.Equal("r1:6379, Password =***", RedisConnectionString.Redact("r1:6379, Password =hunter2"));
    }
}
