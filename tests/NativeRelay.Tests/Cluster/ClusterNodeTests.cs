using NativeRelay.Cluster;
using NativeRelay.Config;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Cluster;

/// <summary>The cluster stage's connection and heartbeat against a real redis-server.</summary>
public sealed class ClusterNodeTests : IAsyncLifetime
{
    private TestRedis _redis = null!;

    public async Task InitializeAsync() => _redis = await TestRedis.StartAsync();

    public async Task DisposeAsync() => await _redis.DisposeAsync();

    private ClusterSettings Settings(string node) => ClusterSettings.Validate(new ClusterOptions
    {
        Redis = _redis.ConnectionString, Node = node, HeartbeatSeconds = 1, LeaseSeconds = 5,
    }, "relay.test")!;

    [Fact]
    public async Task Nodes_see_each_other_through_their_heartbeats_and_a_clean_stop_leaves_the_fleet()
    {
        using var log = new Log(TextWriter.Null);
        await using var a = await ClusterNode.StartAsync(Settings("a"), () => new NodeFacts(3, 2, 1, "v1"), log);
        var b = await ClusterNode.StartAsync(Settings("b"), () => new NodeFacts(5, 0, 0, "v1"), log);
        await a.Membership.BeatOnceAsync();
        Assert.Equal(2, a.Membership.LiveNodes);
        var nodes = await a.Membership.NodesAsync();
        Assert.Equal(["a", "b"], nodes.Select(n => n.Name));
        Assert.All(nodes, n => Assert.True(n.Live));
        Assert.Equal(3, nodes[0].Active);
        Assert.Equal(5, nodes[1].Active);
        Assert.Equal("v1", nodes[1].Version);
        await b.DisposeAsync();
        await a.Membership.BeatOnceAsync();
        Assert.Equal(1, a.Membership.LiveNodes);
        Assert.Equal(["a"], (await a.Membership.NodesAsync()).Select(n => n.Name));
    }

    [Fact]
    public async Task A_node_started_without_redis_runs_degraded_and_joins_when_redis_answers()
    {
        using var log = new Log(TextWriter.Null);
        await _redis.StopAsync();
        await using var a = await ClusterNode.StartAsync(Settings("a"), () => new NodeFacts(0, 0, 0, "v1"), log);
        Assert.True(a.Degraded);
        await _redis.StartAgainAsync();
        await Waits.UntilAsync(() => !a.Degraded, TimeSpan.FromSeconds(30), "the node reconnects to Redis");
        await a.Membership.BeatOnceAsync();
        Assert.Contains("a", await _redis.CommandAsync("ZRANGE", "nativerelay:{nodes}", "0", "-1"));
    }

    [Fact]
    public void A_password_in_the_connection_string_is_refused_and_never_echoed()
    {
        var e = Assert.Throws<ConfigException>(() => ClusterSettings.Validate(new ClusterOptions { Redis = "127.0.0.1:6379,password=hunter2" }, "relay.test"));
        Assert.Contains("cluster.passwordFile", e.Message);
        Assert.DoesNotContain("hunter2", e.Message);
        Assert.Null(ClusterSettings.Validate(new ClusterOptions(), "relay.test"));
    }
}
