using NativeRelay.Cluster;
using NativeRelay.Config;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;
using NativeRelay.Traffic;
using NativeRelay.Traffic.Automation;
using NativeRelay.Traffic.Shaping;

namespace NativeRelay.Tests.Cluster;

/// <summary>
/// Automation actions and resumes shared by a fleet through a real redis-server: each node is its
/// own ClusterNode (its own Redis connection) with its own traffic controller and action table.
/// </summary>
public sealed class SharedActionsTests : IAsyncLifetime
{
    private static readonly TimeSpan Soon = TimeSpan.FromSeconds(5);
    private TestRedis _redis = null!;
    private readonly List<Node> _nodes = new();

    public async Task InitializeAsync() => _redis = await TestRedis.StartAsync();

    public async Task DisposeAsync()
    {
        foreach (var n in _nodes)
            await n.DisposeAsync();
        await _redis.DisposeAsync();
    }

    private sealed class Node(string name, ClusterNode cluster, TrafficController traffic, StringWriter logText, TextWriter logWriter, Log log) : IAsyncDisposable
    {
        public string Name => name;
        public ClusterNode Cluster => cluster;
        public TrafficController Traffic => traffic;
        public string LogText { get { log.Flush(); lock (logWriter) return logText.ToString(); } }

        public bool InForce(string source, string site, TrafficActionKind kind) =>
            traffic.Actions.TryGetSlot(source, site) is { } slot
            && slot.Actions.Any(a => a.Kind == kind && a.InForce(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()));

        /// <summary>What TrafficController.Apply does when a rule matches a reply on the path.</summary>
        public TrafficAction Fire(string source, string site, string rule, TrafficActionKind kind, TimeSpan duration, ShapingLimits? limits = null)
        {
            long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            var action = new TrafficAction(rule, kind, now, now + (long)duration.TotalMilliseconds, "421 4.7.28 rate limited", limits ?? ShapingLimits.None);
            bool added = traffic.Actions.Slot(source, site).Put(action);
            traffic.Sync!.Applied(source, site, action, added);
            return action;
        }

        public async ValueTask DisposeAsync()
        {
            await cluster.DisposeAsync();
            traffic.Dispose();
            log.Dispose();
        }
    }

    private async Task<Node> StartNodeAsync(string name)
    {
        var text = new StringWriter();
        var writer = TextWriter.Synchronized(text);
        var log = new Log(writer);
        var settings = ClusterSettings.Validate(new ClusterOptions { Redis = _redis.ConnectionString, Node = name, HeartbeatSeconds = 1, LeaseSeconds = 5 }, "relay.test")!;
        var cluster = await ClusterNode.StartAsync(settings, () => new NodeFacts(0, 0, 0, "test"), log);
        var traffic = new TrafficController(TrafficSettings.Default, 25, log);
        traffic.Sync = await cluster.ShareActionsAsync(traffic.Actions, log);
        var node = new Node(name, cluster, traffic, text, writer, log);
        _nodes.Add(node);
        return node;
    }

    [Fact]
    public async Task An_action_applied_on_one_node_is_in_force_on_every_node_and_a_resume_on_any_node_lifts_it_everywhere()
    {
        var a = await StartNodeAsync("a");
        var b = await StartNodeAsync("b");
        var c = await StartNodeAsync("c");

        var fired = a.Fire("ip1", "gmail.com", "gmail-rate-limited", TrafficActionKind.Suspend, TimeSpan.FromMinutes(30));
        await Waits.UntilAsync(() => b.InForce("ip1", "gmail.com", TrafficActionKind.Suspend) && c.InForce("ip1", "gmail.com", TrafficActionKind.Suspend),
            Soon, "nodes b and c have the suspension node a applied");
        var onB = b.Traffic.Actions.TryGetSlot("ip1", "gmail.com")!.Actions.Single();
        Assert.Equal(fired.UntilUnixMs, onB.UntilUnixMs);
        Assert.Equal("gmail-rate-limited", onB.Rule);
        Assert.False(b.InForce("ip2", "gmail.com", TrafficActionKind.Suspend)); // only that source's path
        await Waits.UntilAsync(() => b.LogText.Contains("from node a"), Soon, "node b logs the action and the node it came from");
        Assert.Contains("suspend on source ip1 to site gmail.com", b.LogText);
        Assert.DoesNotContain("from node a", a.LogText); // its own echo is ignored

        // A throttle carries its lowered limits.
        a.Fire("ip2", "outlook.com", "server-busy", TrafficActionKind.Throttle, TimeSpan.FromMinutes(15),
            new ShapingLimits { MessagesPerMinute = 6, MaxConnections = 2 });
        await Waits.UntilAsync(() => c.InForce("ip2", "outlook.com", TrafficActionKind.Throttle), Soon, "node c has the throttle");
        var throttle = c.Traffic.Actions.TryGetSlot("ip2", "outlook.com")!.Actions.Single();
        Assert.Equal(6, throttle.Limits.MessagesPerMinute);
        Assert.Equal(2, throttle.Limits.MaxConnections);

        // nativerelay traffic resume gmail.com on node c (which did not apply it) lifts it on a and b.
        Assert.Equal(1, c.Traffic.Resume("gmail.com", null));
        await Waits.UntilAsync(() => !a.InForce("ip1", "gmail.com", TrafficActionKind.Suspend) && !b.InForce("ip1", "gmail.com", TrafficActionKind.Suspend),
            Soon, "the resume on node c lifts the suspension on a and b");
        Assert.True(a.InForce("ip2", "outlook.com", TrafficActionKind.Throttle)); // another site: untouched
        Assert.Equal("0", await _redis.CommandAsync("HEXISTS", "nativerelay:{actions}", "ip1\ngmail.com\ngmail-rate-limited"));
        await Waits.UntilAsync(() => a.LogText.Contains("lifted by the administrator on node c"), Soon, "node a logs the lift and where it came from");
    }

    [Fact]
    public async Task A_node_that_starts_later_loads_the_actions_in_force_and_lapsed_ones_are_not_loaded()
    {
        var a = await StartNodeAsync("a");
        a.Fire("ip1", "yahoo", "yahoo-deferred", TrafficActionKind.Suspend, TimeSpan.FromHours(4));
        a.Fire("ip1", "web.de", "short", TrafficActionKind.Suspend, TimeSpan.FromSeconds(1));
        await Waits.UntilAsync(() => _redis.CommandAsync("HLEN", "nativerelay:{actions}").Result == "2", Soon, "both actions are in Redis");
        await Task.Delay(1500); // the short one lapses

        var late = await StartNodeAsync("late");
        Assert.True(late.InForce("ip1", "yahoo", TrafficActionKind.Suspend));
        Assert.False(late.InForce("ip1", "web.de", TrafficActionKind.Suspend));
    }

    [Fact]
    public async Task With_Redis_away_actions_stay_local_and_nothing_fails_and_they_reach_the_fleet_when_it_is_back()
    {
        var a = await StartNodeAsync("a");
        var b = await StartNodeAsync("b");
        await _redis.StopAsync();
        await Waits.UntilAsync(() => a.Cluster.Degraded && b.Cluster.Degraded, TimeSpan.FromSeconds(30), "both nodes see Redis away");

        a.Fire("ip1", "gmail.com", "gmail-rate-limited", TrafficActionKind.Suspend, TimeSpan.FromMinutes(30));
        Assert.True(a.InForce("ip1", "gmail.com", TrafficActionKind.Suspend)); // in force here at once
        Assert.Equal(0, b.Traffic.Resume("nowhere.example", null)); // a resume without Redis: local, no error
        await Task.Delay(500);
        Assert.False(b.InForce("ip1", "gmail.com", TrafficActionKind.Suspend));

        await _redis.StartAgainAsync(); // an empty Redis (no persistence): the fleet's actions come back from the nodes
        await Waits.UntilAsync(() => b.InForce("ip1", "gmail.com", TrafficActionKind.Suspend), TimeSpan.FromSeconds(30),
            "node b has the suspension node a applied while Redis was away");
        Assert.True(a.InForce("ip1", "gmail.com", TrafficActionKind.Suspend));
    }

    [Fact]
    public async Task A_resume_made_while_Redis_is_away_is_told_to_the_fleet_when_it_is_back()
    {
        var a = await StartNodeAsync("a");
        var b = await StartNodeAsync("b");
        a.Fire("ip1", "gmail.com", "gmail-rate-limited", TrafficActionKind.Suspend, TimeSpan.FromMinutes(30));
        await Waits.UntilAsync(() => b.InForce("ip1", "gmail.com", TrafficActionKind.Suspend), Soon, "node b has the suspension");
        await _redis.StopAsync();
        await Waits.UntilAsync(() => a.Cluster.Degraded && b.Cluster.Degraded, TimeSpan.FromSeconds(30), "both nodes see Redis away");

        Assert.Equal(1, b.Traffic.Resume("gmail.com", "ip1")); // lifted here at once
        Assert.True(a.InForce("ip1", "gmail.com", TrafficActionKind.Suspend)); // node a cannot know yet
        await Waits.UntilAsync(() => b.LogText.Contains("is told to the fleet when Redis is back"), Soon, "node b says the resume waits for Redis");

        // Redis comes back (empty: node a puts its action back, the resume made before lifts it again).
        await _redis.StartAgainAsync();
        await Waits.UntilAsync(() => !a.InForce("ip1", "gmail.com", TrafficActionKind.Suspend), TimeSpan.FromSeconds(30),
            "node a lifts the suspension resumed on node b while Redis was away");
        await a.Cluster.Actions!.ResyncAsync();
        await b.Cluster.Actions!.ResyncAsync();
        Assert.False(a.InForce("ip1", "gmail.com", TrafficActionKind.Suspend));
        Assert.False(b.InForce("ip1", "gmail.com", TrafficActionKind.Suspend));

        // An action started after the resume is not lifted by it.
        a.Fire("ip1", "gmail.com", "gmail-rate-limited", TrafficActionKind.Suspend, TimeSpan.FromMinutes(30));
        await Waits.UntilAsync(() => b.InForce("ip1", "gmail.com", TrafficActionKind.Suspend), Soon, "node b has the new suspension");
    }

    [Fact]
    public async Task A_missed_lift_is_made_up_by_the_resync_from_the_hash()
    {
        var a = await StartNodeAsync("a");
        var b = await StartNodeAsync("b");
        a.Fire("ip1", "gmail.com", "gmail-rate-limited", TrafficActionKind.Suspend, TimeSpan.FromMinutes(30));
        await Waits.UntilAsync(() => b.InForce("ip1", "gmail.com", TrafficActionKind.Suspend), Soon, "node b has the suspension");
        // Lifted in Redis behind the nodes' backs (as if b's subscription had missed the lift message).
        await _redis.CommandAsync("DEL", "nativerelay:{actions}", "nativerelay:{actions}:until");
        await b.Cluster.Actions!.ResyncAsync();
        Assert.False(b.InForce("ip1", "gmail.com", TrafficActionKind.Suspend));
        Assert.Contains("resumed elsewhere in the fleet", b.LogText);
    }
}
