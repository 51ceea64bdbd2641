using System.Diagnostics;
using System.Text;
using NativeRelay.Cluster;
using NativeRelay.Config;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;
using NativeRelay.Traffic;
using NativeRelay.Traffic.Automation;
using NativeRelay.Traffic.Shaping;
using NativeRelay.Traffic.Suppression;

namespace NativeRelay.Tests.Cluster;

/// <summary>
/// The Redis deployments the issue names, each with real redis-server processes and in-process
/// nodes configured as an operator would (a connection string, cluster.passwordFile,
/// cluster.caFile): a password, TLS with a private CA, Sentinel, and Redis Cluster.
/// </summary>
public sealed class RedisDeploymentTests : IAsyncLifetime
{
    private static readonly TimeSpan Soon = TimeSpan.FromSeconds(5);
    private readonly TempDir _dir = new("nativerelay-redisdeploy");
    private readonly List<Node> _nodes = new();
    private readonly List<IAsyncDisposable> _servers = new();

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var node in _nodes)
            await node.DisposeAsync();
        foreach (var server in _servers)
            await server.DisposeAsync();
        _dir.Dispose();
    }

    private sealed class Node(ClusterNode cluster, StringWriter text, TextWriter writer, Log log) : IAsyncDisposable
    {
        private readonly List<IDisposable> _owned = new();
        public ClusterNode Cluster => cluster;
        public Log Log => log;
        public void Own(IDisposable thing) => _owned.Add(thing);
        public TrafficController? Traffic { get; set; }
        public SuppressionList? Suppression { get; set; }

        /// <summary>Everything the node logged so far.</summary>
        public string LogText { get { log.Flush(); lock (writer) return text.ToString(); } }

        public async ValueTask DisposeAsync()
        {
            await cluster.StopSharingSuppressionAsync();
            Suppression?.Dispose();
            await cluster.DisposeAsync();
            Traffic?.Dispose();
            log.Dispose();
            foreach (var thing in _owned)
                thing.Dispose();
        }
    }

    private async Task<Node> StartNodeAsync(string name, string redis, string? passwordFile = null, string? caFile = null)
    {
        var text = new StringWriter();
        var writer = TextWriter.Synchronized(text);
        var log = new Log(writer);
        var settings = ClusterSettings.Validate(new ClusterOptions
        {
            Redis = redis, Node = name, PasswordFile = passwordFile, CaFile = caFile, HeartbeatSeconds = 1, LeaseSeconds = 5,
        }, "relay.test")!;
        var cluster = await ClusterNode.StartAsync(settings, () => new NodeFacts(0, 0, 0, "test"), log);
        var node = new Node(cluster, text, writer, log);
        _nodes.Add(node);
        return node;
    }

    private T Server<T>(T server) where T : IAsyncDisposable
    {
        _servers.Add(server);
        return server;
    }

    /// <summary>Takes one token of a fleet rate as the traffic stage does (bounded wait); whether one came.</summary>
    private static async Task<bool> TakeTokenAsync(FleetRate rate)
    {
        var deadline = DateTime.UtcNow + Soon;
        while (DateTime.UtcNow < deadline)
        {
            if (rate.TryTake(Stopwatch.GetTimestamp(), out _))
                return true;
            using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            try
            {
                await rate.WhenReady(cancel.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }
        return false;
    }

    private static FleetRate Rate(Node node) => node.Cluster.Limits.Rates.Rate("path:default|example.com", 50, null, null, null)!;

    /// <summary>Waits (bounded) for a log line holding <paramref name="start"/> and one of the |-separated reasons; fails showing the log.</summary>
    private static async Task LoggedAsync(Node node, string start, string reasons, string what)
    {
        bool Found() => node.LogText.Split('\n').Any(line => line.Contains(start) && reasons.Split('|').Any(line.Contains));
        var deadline = DateTime.UtcNow + Soon;
        while (!Found() && DateTime.UtcNow < deadline)
            await Task.Delay(50);
        Assert.True(Found(), $"{what}; the log:\n{node.LogText}");
    }

    /// <summary>Nothing at error level, and no Redis error a key layout could cause on Redis Cluster.</summary>
    private static void AssertNoErrors(Node node)
    {
        string text = node.LogText;
        Assert.DoesNotContain(" error ", text);
        Assert.DoesNotContain("CROSSSLOT", text);
        Assert.DoesNotContain("MOVED", text);
        Assert.DoesNotContain("NOSCRIPT", text);
    }

    [Fact]
    public async Task A_node_with_the_password_file_joins_and_one_with_a_wrong_password_stays_degraded_and_neither_logs_the_password()
    {
        const string password = "Pa55-only-in-files-7f3a";
        const string wrong = "not-the-password-91c2";
        var redis = Server(await TestRedis.StartAsync(password));
        string good = _dir.File("redis.pass"), bad = _dir.File("wrong.pass");
        File.WriteAllText(good, password + "\n");
        File.WriteAllText(bad, wrong + "\n");

        var a = await StartNodeAsync("a", redis.ConnectionString, passwordFile: good);
        Assert.False(a.Cluster.Degraded);
        await a.Cluster.Membership.BeatOnceAsync();
        Assert.Contains("a", (await redis.CommandAsync("ZRANGE", "nativerelay:{nodes}", "0", "-1")).Split('\n'));
        var rate = Rate(a);
        Assert.True(await TakeTokenAsync(rate), "node a takes a token of the fleet's rate");
        Assert.True(a.Cluster.Limits.Rates.TokensGranted > 0, "the token came from Redis");
        Assert.Equal("1", await redis.CommandAsync("EXISTS", "nativerelay:rate:path:default|example.com"));

        var b = await StartNodeAsync("b", redis.ConnectionString, passwordFile: bad);
        Assert.True(b.Cluster.Degraded);
        await b.Cluster.Membership.BeatOnceAsync(); // falls back quietly, nothing thrown
        Assert.True(await TakeTokenAsync(Rate(b)), "node b's mail path still gets tokens, from its local share");
        Assert.True(b.Cluster.Limits.Rates.FallbackSpent > 0);
        Assert.Equal(0, b.Cluster.Limits.Rates.TokensGranted);
        Assert.DoesNotContain("b", (await redis.CommandAsync("ZRANGE", "nativerelay:{nodes}", "0", "-1")).Split('\n'));
        Assert.Contains("cannot reach Redis", b.LogText);
        await LoggedAsync(b, "cannot use Redis: ", "AuthenticationFailure|NOAUTH|WRONGPASS",
            "node b logs why it cannot use Redis (the password is refused), not only that it cannot reach it");

        foreach (var node in new[] { a, b })
        {
            Assert.DoesNotContain(password, node.LogText);
            Assert.DoesNotContain(wrong, node.LogText);
        }
    }

    [Fact]
    public async Task Over_tls_a_node_trusting_the_ca_file_joins_and_without_it_or_for_another_name_it_does_not_connect()
    {
        using var pki = new TestPki();
        var redis = Server(await TlsRedis.StartAsync(pki, _dir.Path, "redis.fleet.test"));
        string ca = pki.WriteRoot(_dir.Path, "fleet-ca.pem");
        string connection = $"127.0.0.1:{redis.Port},ssl=true,sslHost={redis.Name}";

        var a = await StartNodeAsync("a", connection, caFile: ca);
        Assert.False(a.Cluster.Degraded);
        await a.Cluster.Membership.BeatOnceAsync();
        Assert.Contains("a", (await redis.CommandAsync("ZRANGE", "nativerelay:{nodes}", "0", "-1")).Split('\n'));
        Assert.True(await TakeTokenAsync(Rate(a)));
        Assert.True(a.Cluster.Limits.Rates.TokensGranted > 0, "the token came from Redis over TLS");
        AssertNoErrors(a);

        // The CA is not in the system store: without cluster.caFile the server is not trusted.
        var untrusting = await StartNodeAsync("untrusting", connection);
        Assert.True(untrusting.Cluster.Degraded);
        Assert.Contains("cannot reach Redis", untrusting.LogText);
        await Waits.UntilAsync(() => untrusting.LogText.Contains("(CN=redis.fleet.test, issued by CN=NativeRelay Test Root CA) is not signed by a CA of the system store"),
            Soon, "the node logs that the server's certificate is not trusted");
        // The right CA but another name: a name mismatch is never forgiven.
        var misnamed = await StartNodeAsync("misnamed", $"127.0.0.1:{redis.Port},ssl=true,sslHost=other.fleet.test", caFile: ca);
        Assert.True(misnamed.Cluster.Degraded);
        await Waits.UntilAsync(() => misnamed.LogText.Contains("(CN=redis.fleet.test) is not for the name asked for"), Soon,
            "the node logs that the certificate is for another name");
        await untrusting.Cluster.Membership.BeatOnceAsync();
        await misnamed.Cluster.Membership.BeatOnceAsync();
        Assert.Equal(["a"], (await redis.CommandAsync("ZRANGE", "nativerelay:{nodes}", "0", "-1")).Split('\n'));
    }

    [Fact]
    public async Task Through_sentinel_a_node_finds_the_master_and_its_heartbeat_and_rate_land_there()
    {
        var deployment = Server(await SentinelRedis.StartAsync(_dir.Path));

        var a = await StartNodeAsync("a", deployment.ConnectionString);
        Assert.False(a.Cluster.Degraded);
        await a.Cluster.Membership.BeatOnceAsync();
        Assert.Contains("a", (await deployment.Master.CommandAsync("ZRANGE", "nativerelay:{nodes}", "0", "-1")).Split('\n'));
        Assert.True(await TakeTokenAsync(Rate(a)));
        Assert.True(a.Cluster.Limits.Rates.TokensGranted > 0);
        Assert.Equal("1", await deployment.Master.CommandAsync("EXISTS", "nativerelay:rate:path:default|example.com"));
        AssertNoErrors(a);
    }

    [Fact]
    public async Task Through_sentinel_with_a_password_file_the_node_authenticates_to_sentinel_and_master_and_never_logs_it()
    {
        const string password = "sentinel-and-master-5e1d";
        var deployment = Server(await SentinelRedis.StartAsync(_dir.Path, password));
        string file = _dir.File("redis.pass");
        File.WriteAllText(file, password + "\n");

        var a = await StartNodeAsync("a", deployment.ConnectionString, passwordFile: file);
        Assert.False(a.Cluster.Degraded);
        await a.Cluster.Membership.BeatOnceAsync();
        Assert.Contains("a", (await deployment.Master.CommandAsync("ZRANGE", "nativerelay:{nodes}", "0", "-1")).Split('\n'));
        AssertNoErrors(a);
        Assert.DoesNotContain(password, a.LogText);
    }

    [Fact]
    public async Task On_redis_cluster_heartbeats_rates_actions_and_suppression_work_across_the_slots()
    {
        var trio = Server(await RedisClusterTrio.StartAsync(_dir.Path));

        var a = await StartNodeAsync("a", trio.ConnectionString);
        var b = await StartNodeAsync("b", trio.ConnectionString);
        foreach (var (node, name) in new[] { (a, "a"), (b, "b") })
        {
            Assert.False(node.Cluster.Degraded);
            node.Traffic = new TrafficController(TrafficSettings.Default, 25, node.Log);
            node.Traffic.Sync = await node.Cluster.ShareActionsAsync(node.Traffic.Actions, node.Log);
            var dir = new TempDir("nativerelay-redisdeploy-" + name);
            node.Own(dir);
            node.Suppression = SuppressionList.Open(dir.Path, node.Log);
            await node.Cluster.ShareSuppressionAsync(node.Suppression, node.Log);
        }

        // Heartbeats: the two-key script with the {nodes} hash tag, and the fleet read back.
        await a.Cluster.Membership.BeatOnceAsync();
        await b.Cluster.Membership.BeatOnceAsync();
        Assert.Equal(2, b.Cluster.Membership.LiveNodes);
        Assert.Equal(["a", "b"], (await a.Cluster.Membership.NodesAsync()).Select(n => n.Name));

        // A shared rate: both nodes take from the same bucket in the cluster.
        Assert.True(await TakeTokenAsync(Rate(a)));
        Assert.True(await TakeTokenAsync(Rate(b)));
        Assert.True(a.Cluster.Limits.Rates.TokensGranted > 0 && b.Cluster.Limits.Rates.TokensGranted > 0);

        // An action fired on a is in force on b.
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var action = new TrafficAction("rate-limited", TrafficActionKind.Suspend, now, now + 600_000, "421 4.7.28 rate limited", ShapingLimits.None);
        bool added = a.Traffic!.Actions.Slot("ip1", "example.com").Put(action);
        a.Traffic.Sync!.Applied("ip1", "example.com", action, added);
        await Waits.UntilAsync(() => b.Traffic!.Actions.TryGetSlot("ip1", "example.com") is { } slot
                                     && slot.Actions.Any(x => x.Kind == TrafficActionKind.Suspend),
            Soon, "node b has the suspension node a applied");

        // A suppression added through a is refused by b.
        Assert.True(a.Suppression!.TryAdd(Encoding.UTF8.GetBytes("bounced@example.com"), default, "test", now));
        a.Suppression.Commit();
        await Waits.UntilAsync(() => b.Suppression!.IsSuppressed(Encoding.UTF8.GetBytes("bounced@example.com"), null, []), Soon,
            "node b refuses the recipient suppressed through node a");
        Assert.Equal(0, a.Cluster.Suppression!.Pending);

        AssertNoErrors(a);
        AssertNoErrors(b);
        Assert.False(a.Cluster.Degraded || b.Cluster.Degraded);
        // The keys are spread over the cluster's masters (a single slot would prove nothing).
        int holding = 0;
        foreach (int port in trio.Ports)
            if (long.Parse(await RedisCommand.RunAsync(port, ["DBSIZE"]), System.Globalization.CultureInfo.InvariantCulture) > 0)
                holding++;
        Assert.True(holding >= 2, $"the fleet's keys are on {holding} of the three masters");
    }
}
