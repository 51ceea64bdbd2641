using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// A fleet of three relays sharing limits, actions and the suppression list through a real
/// redis-server (issue 28, "Proof"): n1, n2, n3 on 127.0.0.11, .12 and .13 with their own spools,
/// joined with <c>--redis</c> and <c>--node</c>, sending from their own addresses to sinks that
/// record peer addresses, times and the connections open at each instant (see <see cref="Fleet"/>).
/// The long scenarios check every phase before failing (<see cref="SoftChecks"/>), so one run
/// says which parts hold.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class FleetTests(ITestOutputHelper log)
{
    private const string From = "sender@origin.test";

    /// <summary>The arrivals (of the given sink messages) within [from, to).</summary>
    private static List<ReceivedMessage> Between(IEnumerable<ReceivedMessage> messages, DateTime from, DateTime to) =>
        messages.Where(m => m.ReceivedAt >= from && m.ReceivedAt < to).OrderBy(m => m.ReceivedAt).ToList();

    private static async Task SleepUntil(DateTime when)
    {
        var left = when - DateTime.UtcNow;
        if (left > TimeSpan.Zero)
            await Task.Delay(left);
    }

    private static string NodeOf(Fleet fleet, string peer) => fleet.Nodes.FirstOrDefault(n => n.Address.ToString() == peer)?.Name ?? peer;

    [Fact]
    public async Task Cluster_status_lists_the_nodes_from_their_heartbeats_and_queue_stats_cluster_sums_their_queues()
    {
        await using var fleet = await Fleet.StartAsync(log);
        // fleet.test's host defers everything: the messages stay queued (deferred) on the node that took them.
        fleet.Rated.DataReply = _ => "451 4.3.0 try again later";
        int[] sent = [2, 3, 1];
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < sent[i]; k++)
            {
                var reply = await fleet.Nodes[i].SendAsync(From, "user@" + Fleet.RatedDomain, MessageText.Simple($"q-{i}-{k}@fleet.test"));
                Assert.True(reply.Code == 250, $"{fleet.Nodes[i].Name}: {reply}");
            }
        await fleet.Rated.WaitUntilAsync(() => fleet.Rated.DataAttemptCount >= 6, Waits.Delivery, "a first attempt of each of the 6 messages");

        // Each node's heartbeat carries its queue (within a heartbeat, 1 s here).
        JsonObject status = null!;
        await Waits.UntilAsync(async () =>
        {
            status = await fleet.Nodes[0].ClusterStatusAsync();
            var nodes = status["nodes"]!.AsArray();
            return nodes.Count == 3 && Enumerable.Range(0, 3).All(i =>
                (long)nodes[i]!["active"]! + (long)nodes[i]!["deferred"]! == sent[i]);
        }, TimeSpan.FromSeconds(20), "the nodes' heartbeats carry their queue sizes");
        Assert.Equal("n1", (string?)status["node"]);
        Assert.Equal(fleet.Redis.ConnectionString, (string?)status["redis"]);
        Assert.False((bool)status["degraded"]!);
        Assert.Equal(3, (int)status["liveNodes"]!);
        Assert.Equal(["n1", "n2", "n3"], status["nodes"]!.AsArray().Select(n => (string)n!["name"]!));
        foreach (var n in status["nodes"]!.AsArray())
        {
            Assert.True((bool)n!["live"]!, n.ToJsonString());
            Assert.False((bool)n["degraded"]!, n.ToJsonString());
            Assert.False(string.IsNullOrEmpty((string?)n["version"]), n.ToJsonString());
            Assert.InRange((long)n["lastHeartbeatAgeMs"]!, 0, 6_000); // live: within three heartbeats
        }

        // The text form, asked of another node, found through its configuration file.
        var text = await CliRun.RunAsync(["cluster", "status", "--config", fleet.Nodes[1].Dir.File("relay.json")], [], fleet.Nodes[1].Dir.Path, log);
        Assert.True(text.ExitCode == 0, text.ToString());
        var lines = text.Stdout.Split('\n');
        Assert.Contains(lines, l => l.StartsWith("node:       n2", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("redis:      " + fleet.Redis.ConnectionString + " (reachable", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("live nodes: 3", StringComparison.Ordinal));
        foreach (var name in new[] { "n1", "n2", "n3" })
            Assert.Contains(lines, l => l.StartsWith(name + " ", StringComparison.Ordinal) && l.Contains(" live ", StringComparison.Ordinal));

        // queue stats --cluster: the live nodes' queues summed, and per node.
        var stats = await fleet.Nodes[2].CliAsync("queue", "stats", "--cluster", "--json");
        Assert.True(stats.ExitCode == 0, stats.ToString());
        var json = JsonNode.Parse(stats.Stdout)!;
        Assert.Equal(6, (int)json["stats"]!["active"]! + (int)json["stats"]!["deferred"]!);
        Assert.Equal(3, json["cluster"]!["nodes"]!.AsArray().Count);
        var statsText = await fleet.Nodes[2].CliAsync("queue", "stats", "--cluster");
        Assert.True(statsText.ExitCode == 0, statsText.ToString());
        Assert.Contains("fleet:    3 live node(s) of 3", statsText.Stdout);
        Assert.Matches(@"(?m)^\s+n2\s+\d+\s+\d+\s+0\s*$", statsText.Stdout);

        // The metrics endpoint shows the node's view: Redis up, three live nodes.
        foreach (var node in fleet.Nodes)
        {
            var metrics = await node.MetricsAsync();
            Assert.Equal(1, metrics["nativerelay_cluster_redis_up"]);
            Assert.Equal(3, metrics["nativerelay_cluster_nodes"]);
            Assert.True(metrics["nativerelay_cluster_redis_calls_total"] > 0);
        }

        // A node killed with kill -9 sends no more heartbeats: within three of them it is gone, and the others count two.
        await fleet.Nodes[2].KillAsync();
        await Waits.UntilAsync(async () =>
        {
            status = await fleet.Nodes[0].ClusterStatusAsync();
            return (int)status["liveNodes"]! == 2;
        }, TimeSpan.FromSeconds(20), "n1 counts two live nodes after n3 was killed");
        var n3 = status["nodes"]!.AsArray().Single(n => (string?)n!["name"] == "n3")!;
        Assert.False((bool)n3["live"]!);
        text = await fleet.Nodes[0].CliAsync("cluster", "status");
        Assert.Contains(text.Stdout.Split('\n'), l => l.StartsWith("n3 ", StringComparison.Ordinal) && l.Contains(" gone ", StringComparison.Ordinal));
        stats = await fleet.Nodes[0].CliAsync("queue", "stats", "--cluster", "--json");
        json = JsonNode.Parse(stats.Stdout)!;
        Assert.Equal(5, (int)json["stats"]!["active"]! + (int)json["stats"]!["deferred"]!); // n3's one message is not counted
        Assert.Equal(2, (await fleet.Nodes[0].MetricsAsync())["nativerelay_cluster_nodes"]);

        // A relay on its own says so in one line, exit 1 (as traffic and suppress for what a relay does not do).
        using var dir = new TempDir();
        int port = FreePort.Get();
        using var single = await RelayProcess.StartServeAsync(["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--relay-to", "127.0.0.1:9"], port, dir.Path, log);
        foreach (var args in new[] { new[] { "cluster", "status" }, ["queue", "stats", "--cluster"] })
        {
            var alone = await CliRun.RunAsync([.. args, "--spool", dir.Spool], [], dir.Path, log);
            Assert.True(alone.ExitCode == 1, alone.ToString());
            Assert.Empty(alone.Stdout);
            var line = Assert.Single(alone.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.Contains("not part of a fleet", line);
        }
        // No relay at all: exit 3, as queue.
        using var empty = new TempDir();
        var none = await CliRun.RunAsync(["cluster", "status", "--spool", empty.Spool], [], empty.Path, log);
        Assert.True(none.ExitCode == 3, none.ToString());
    }

    [Fact]
    public async Task Check_config_describes_the_cluster_section_and_the_fleet_examples_never_showing_the_password()
    {
        using var dir = new TempDir();
        string secret = dir.File("redis-password");
        File.WriteAllText(secret, "hunter2-secret\n");
        string config = dir.File("relay.json");
        File.WriteAllText(config, $$"""
            { "spool": "{{dir.Spool}}", "relayTo": "127.0.0.1:9",
              "cluster": { "redis": "127.0.0.1:6379,user=relay", "passwordFile": "{{secret}}", "node": "n7", "leaseSeconds": 10 } }
            """);
        var ok = await CliRun.RunAsync(["check-config", config], [], dir.Path, log);
        Assert.True(ok.ExitCode == 0, ok.ToString());
        var line = Assert.Single(ok.Stdout.Split('\n'), l => l.StartsWith("cluster ", StringComparison.Ordinal));
        Assert.Contains("node n7 of the fleet sharing Redis 127.0.0.1:6379,user=relay", line);
        Assert.Contains($"password read from {secret}", line);
        Assert.Contains("connection leases 10s", line);
        Assert.Contains("heartbeat every 2s", line);
        Assert.DoesNotContain("hunter2", ok.Stdout + ok.Stderr);

        // Without the section: off, in one line.
        File.WriteAllText(config, $$"""{ "spool": "{{dir.Spool}}", "relayTo": "127.0.0.1:9" }""");
        ok = await CliRun.RunAsync(["check-config", config], [], dir.Path, log);
        Assert.Contains(ok.Stdout.Split('\n'), l => l.StartsWith("cluster           off", StringComparison.Ordinal));

        // A password in the connection string is refused, by check-config and by serve, without repeating it.
        File.WriteAllText(config, $$"""{ "spool": "{{dir.Spool}}", "relayTo": "127.0.0.1:9", "cluster": { "redis": "127.0.0.1:6379,password=hunter2-secret" } }""");
        var bad = await CliRun.RunAsync(["check-config", config], [], dir.Path, log);
        Assert.True(bad.ExitCode == 2, bad.ToString());
        Assert.Contains("cluster.passwordFile", bad.Stderr);
        Assert.DoesNotContain("hunter2", bad.Stdout + bad.Stderr);
        var serve = await CliRun.RunAsync(["serve", "--listen", $"127.0.0.1:{FreePort.Get()}", "--spool", dir.Spool, "--relay-to", "127.0.0.1:9",
            "--redis", "127.0.0.1:6379,password=hunter2-secret"], [], dir.Path, log);
        Assert.True(serve.ExitCode == 2, serve.ToString());
        Assert.DoesNotContain("hunter2", serve.Stdout + serve.Stderr);
        // A password file that is not there is named.
        File.WriteAllText(config, $$"""{ "spool": "{{dir.Spool}}", "relayTo": "127.0.0.1:9", "cluster": { "redis": "127.0.0.1:6379", "passwordFile": "{{dir.File("nope")}}" } }""");
        bad = await CliRun.RunAsync(["check-config", config], [], dir.Path, log);
        Assert.True(bad.ExitCode == 2, bad.ToString());
        Assert.Contains("cluster.passwordFile", bad.Stderr);

        // The fleet example's three nodes (docs/deploy/fleet), with their shaping file where the test can put it.
        string shaping = dir.File("shaping.json");
        File.Copy(Path.Combine(CliRun.RepoRoot, "docs", "examples", "shaping.json"), shaping);
        foreach (var node in new[] { "mx1", "mx2", "mx3" })
        {
            string example = dir.File(node + ".json");
            File.WriteAllText(example, File.ReadAllText(Path.Combine(CliRun.RepoRoot, "docs", "deploy", "fleet", node + ".json"))
                .Replace("/etc/nativerelay/shaping.json", shaping));
            var result = await CliRun.RunAsync(["check-config", example], [], dir.Path, log);
            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Contains($"node {node} of the fleet sharing Redis sentinel1:26379,sentinel2:26379,sentinel3:26379,serviceName=nativerelay", result.Stdout);
        }
    }

    [Fact]
    public async Task A_site_rate_holds_fleet_wide_and_with_redis_away_for_30_s_mail_flows_at_the_fallback_share_and_nothing_acknowledged_is_lost()
    {
        // R messages a second to fleet.test's site, and to solo.test's, for the whole fleet.
        const double R = 20;
        int window = int.TryParse(Environment.GetEnvironmentVariable("NATIVERELAY_RATE_WINDOW_SECONDS"), out int w) ? w : 60;
        const int Outage = 30;
        var checks = new SoftChecks(log);
        await using var fleet = await Fleet.StartAsync(log, $$"""
            { "rules": [
                { "site": "{{Fleet.RatedSite}}", "messagesPerSecond": {{R}} },
                { "site": "{{Fleet.SoloSite}}", "messagesPerSecond": {{R}} } ] }
            """);
        var rated = fleet.Rated;

        // Backlogs on all three, for the window and the outage together at R (a third each), and half
        // as much again: the shared bucket need not split the rate evenly between the nodes.
        int perNode = (int)(R * (window + Outage + 15) / 3 * 1.5);
        await Task.WhenAll(fleet.Nodes.Select(n => n.BlastAsync(perNode, "user@" + Fleet.RatedDomain)));

        // (a) The window starts at the 20th arrival (the backlogs are queued by then) and runs `window` seconds.
        await rated.WaitForCountAsync(20, TimeSpan.FromSeconds(30));
        var start = rated.Messages.OrderBy(m => m.ReceivedAt).ElementAt(19).ReceivedAt;
        var end = start.AddSeconds(window);
        await SleepUntil(end.AddSeconds(1));
        var inWindow = Between(rated.Messages, start, end);
        double rate = inWindow.Count / (double)window;
        log.WriteLine($"shared: {inWindow.Count} arrivals in {window} s = {rate:0.00}/s (limit {R}/s); by node: "
                      + string.Join(", ", inWindow.GroupBy(m => NodeOf(fleet, m.PeerAddress)).OrderBy(g => g.Key).Select(g => $"{g.Key} {g.Count()}")));
        checks.InRange(rate, R * 0.9, R * 1.1, $"(a) the fleet's rate to {Fleet.RatedSite} over {window} s with all three backlogged");
        var lastTen = Between(rated.Messages, end.AddSeconds(-10), end);
        foreach (var node in fleet.Nodes)
            checks.That(lastTen.Any(m => m.PeerAddress == node.Address.ToString()), $"(a) {node.Name} still had a backlog (delivered) in the window's last 10 s");

        // (e) Redis away for 30 s. (A look at the fleet first: while Redis is away a node shows the list it read last.)
        Assert.Equal(3, (await fleet.Nodes[0].ClusterStatusAsync())["nodes"]!.AsArray().Count);
        await fleet.Redis.StopAsync();
        var stopped = DateTime.UtcNow;
        log.WriteLine($"redis stopped at {stopped:HH:mm:ss.fff}");
        // Every node notices (its metrics and cluster status say degraded) and keeps the live count it last saw.
        foreach (var node in fleet.Nodes)
        {
            await Waits.UntilAsync(async () => (await node.MetricsAsync())["nativerelay_cluster_redis_up"] == 0,
                TimeSpan.FromSeconds(15), $"{node.Name}'s metrics say Redis is down");
            Assert.Equal(3, (await node.MetricsAsync())["nativerelay_cluster_nodes"]);
        }
        var degraded = await fleet.Nodes[0].ClusterStatusAsync();
        Assert.True((bool)degraded["degraded"]!, degraded.ToJsonString());
        Assert.Equal(3, (int)degraded["liveNodes"]!);
        Assert.NotNull((string?)degraded["nodesError"]);
        Assert.Equal(3, degraded["nodes"]!.AsArray().Count); // the list as last read
        await fleet.Nodes[0].Process.WaitForOutputAsync("cluster: Redis is unreachable", TimeSpan.FromSeconds(5));

        // No node stops accepting: each takes a message a second to flow.test (no limits) while Redis is away.
        var acknowledged = new List<string>();
        var refused = new List<string>();
        int sequence = 0;
        while (DateTime.UtcNow < stopped.AddSeconds(Outage))
        {
            foreach (var node in fleet.Nodes)
            {
                string id = $"outage-{node.Name}-{sequence}@fleet.test";
                var reply = await node.SendAsync(From, "user@" + Fleet.FlowDomain, MessageText.Simple(id));
                (reply.Code == 250 ? acknowledged : refused).Add($"<{id}>" + (reply.Code == 250 ? "" : $" {reply}"));
            }
            sequence++;
            await Task.Delay(1000);
        }
        // ... nor delivering: each node's outage mail reached flow.test while Redis was still away.
        var restartAt = DateTime.UtcNow;
        foreach (var node in fleet.Nodes)
            Assert.True(fleet.Flow.Messages.Any(m => m.PeerAddress == node.Address.ToString() && m.ReceivedAt < restartAt),
                $"{node.Name} delivered nothing while Redis was away\n{node.Process.Describe()}\n{fleet.Flow.Describe()}");
        Assert.Empty(refused);
        Assert.True(acknowledged.Count >= 3 * (Outage - 10), $"only {acknowledged.Count} messages were sent during the outage");

        // The combined rate to the limited site stays within the fallback bound (limit / 3 live nodes each: about the limit).
        var outageFrom = stopped.AddSeconds(5);
        var during = Between(rated.Messages, outageFrom, restartAt);
        double fallbackRate = during.Count / (restartAt - outageFrom).TotalSeconds;
        log.WriteLine($"degraded: {during.Count} arrivals in {(restartAt - outageFrom).TotalSeconds:0.0} s = {fallbackRate:0.00}/s; by node: "
                      + string.Join(", ", during.GroupBy(m => NodeOf(fleet, m.PeerAddress)).OrderBy(g => g.Key).Select(g => $"{g.Key} {g.Count()}")));
        checks.That(fallbackRate <= R * 1.1, $"(e) the fleet's rate with Redis away, {fallbackRate:0.00}/s, is within the fallback bound {R * 1.1:0.#}/s");
        foreach (var node in fleet.Nodes)
            checks.That(during.Any(m => m.PeerAddress == node.Address.ToString()), $"(e) {node.Name} delivered to the limited site while Redis was away");

        // Redis back (empty: no persistence): the nodes see it, beat again, and the fleet is whole.
        await fleet.Redis.StartAgainAsync();
        log.WriteLine($"redis started again at {DateTime.UtcNow:HH:mm:ss.fff}");
        foreach (var node in fleet.Nodes)
            await Waits.UntilAsync(async () => (await node.MetricsAsync())["nativerelay_cluster_redis_up"] == 1,
                TimeSpan.FromSeconds(30), $"{node.Name}'s metrics say Redis is back");
        await Waits.UntilAsync(async () => (await fleet.Redis.CommandAsync("ZRANGE", "nativerelay:{nodes}", "0", "-1")).Split('\n').Length == 3,
            TimeSpan.FromSeconds(10), "all three nodes' heartbeats are in the new Redis");
        var back = await fleet.Nodes[1].ClusterStatusAsync();
        Assert.False((bool)back["degraded"]!, back.ToJsonString());
        Assert.Null((string?)back["nodesError"]);
        Assert.Equal(3, back["nodes"]!.AsArray().Count(n => (bool)n!["live"]!));
        await fleet.Nodes[1].Process.WaitForOutputAsync("cluster: Redis answers again", TimeSpan.FromSeconds(5));

        // Every acknowledged message arrives, exactly once (and nothing else does).
        var expected = acknowledged.ToHashSet();
        await fleet.Flow.WaitUntilAsync(() => expected.IsSubsetOf(fleet.Flow.Messages.Select(m => m.Header("Message-ID")!)),
            Waits.Delivery, $"the {expected.Count} messages acknowledged during the outage");
        await fleet.Flow.AssertStaysTrueAsync(() => fleet.Flow.Messages.Count == expected.Count, TimeSpan.FromSeconds(2), "no duplicate arrives");
        var ids = fleet.Flow.Messages.Select(m => m.Header("Message-ID")!).ToList();
        Assert.Equal(ids.Count, ids.Distinct().Count());
        Assert.True(expected.SetEquals(ids));

        // Shared limits are back: one node alone with a backlog to solo.test gets the whole limit, not its fallback third.
        await fleet.Nodes[0].BlastAsync((int)(R * 15), "user@" + Fleet.SoloDomain);
        await fleet.Solo.WaitForCountAsync(20, TimeSpan.FromSeconds(30));
        var soloStart = fleet.Solo.Messages.OrderBy(m => m.ReceivedAt).ElementAt(19).ReceivedAt;
        await SleepUntil(soloStart.AddSeconds(10.5));
        double soloRate = Between(fleet.Solo.Messages, soloStart, soloStart.AddSeconds(10)).Count / 10.0;
        checks.InRange(soloRate, R * 0.9, R * 1.1, $"(e) after Redis came back, one node alone sends to {Fleet.SoloSite} at the shared limit (its fallback share would be {R / 3:0.#}/s)");

        checks.AssertAll(fleet.Describe);
    }

    [Fact]
    public async Task A_connection_limit_holds_fleet_wide_at_every_instant_and_a_killed_nodes_leases_lapse_within_the_lease_time()
    {
        const int C = 2;
        const int Lease = 5;
        var checks = new SoftChecks(log);
        await using var fleet = await Fleet.StartAsync(log, $$"""{ "rules": [ { "site": "{{Fleet.RatedSite}}", "maxConnections": {{C}} } ] }""", leaseSeconds: Lease);
        var sink = fleet.Rated;
        // A slow receiver: every connection stays busy while there is a backlog.
        sink.DataDelay = TimeSpan.FromMilliseconds(200);
        await Task.WhenAll(fleet.Nodes.Select(n => n.BlastAsync(150, "user@" + Fleet.RatedDomain)));

        await sink.WaitUntilAsync(() => sink.OpenConnections >= C, TimeSpan.FromSeconds(30), $"{C} connections open");
        // Watched for 10 s: never more than C at once over the whole fleet.
        var watchUntil = DateTime.UtcNow.AddSeconds(10);
        while (DateTime.UtcNow < watchUntil)
            await Task.Delay(100);
        log.WriteLine($"most connections open at once: {sink.MaxConcurrentConnections}; open now by node: "
                      + string.Join(", ", sink.OpenConnectionsByPeer.Select(p => $"{NodeOf(fleet, p.Key)} {p.Value}")));
        // The sink counts a session from its accept to the client's QUIT (before its 221), so a
        // node that closes a connection and gives back its lease is never counted twice with the
        // connection another node opens on that lease.
        checks.That(sink.MaxConcurrentConnections <= C, $"(b) at most {C} connections open at once to {Fleet.RatedSite} over the fleet (saw {sink.MaxConcurrentConnections})");

        // kill -9 a node that holds a connection: its leases stay in Redis until they lapse, then the others take them.
        var open = sink.OpenConnectionsByPeer;
        Assert.True(open.Count > 0, "no connection open to pick a node by");
        var victim = fleet.Nodes.Single(n => n.Address.ToString() == open.OrderByDescending(p => p.Value).First().Key);
        var others = fleet.Nodes.Where(n => n != victim).Select(n => n.Address.ToString()).ToHashSet();
        await victim.KillAsync();
        var killed = Stopwatch.StartNew();
        log.WriteLine($"killed {victim.Name}, which held {open[victim.Address.ToString()]} connection(s)");
        await sink.WaitUntilAsync(() => !sink.OpenConnectionsByPeer.ContainsKey(victim.Address.ToString()), TimeSpan.FromSeconds(10),
            $"{victim.Name}'s connections closed by its death");
        bool reached = true;
        try
        {
            // The lease time, and a heartbeat and a retry of slack for the others to notice.
            await sink.WaitUntilAsync(() => sink.OpenConnectionsByPeer.Where(p => others.Contains(p.Key)).Sum(p => p.Value) >= C,
                TimeSpan.FromSeconds(Lease + 3), $"the other nodes holding {C} connections again");
        }
        catch (TimeoutException)
        {
            reached = false;
        }
        log.WriteLine($"the others held {C} connections {killed.Elapsed.TotalSeconds:0.0} s after the kill (lease {Lease} s)");
        checks.That(reached, $"(b) the other nodes reach {C} connections again within the lease time ({Lease} s, +3 s of slack) after {victim.Name} was killed");
        await Task.Delay(2000);
        checks.That(sink.MaxConcurrentConnections <= C, $"(b) still at most {C} connections at once after the kill (saw {sink.MaxConcurrentConnections})");
        checks.AssertAll(fleet.Describe);
    }

    private const string Rate4728 = "421 4.7.28 [127.0.0.12] Our system has detected an unusual rate of unsolicited mail originating from your IP address. gsmtp";

    [Fact]
    public async Task A_recipient_suppressed_through_one_node_is_refused_by_the_others_and_a_421_4_7_28_suspends_the_site_on_all_three()
    {
        var checks = new SoftChecks(log);
        await using var fleet = await Fleet.StartAsync(log, """
            { "automation": [ { "name": "gmail-rate-limited", "code": 421, "enhanced": "4.7.28", "action": "suspend", "duration": "10m" } ] }
            """);
        var (n1, n2, n3) = (fleet.Nodes[0], fleet.Nodes[1], fleet.Nodes[2]);

        // (c) Suppressed through n1: refused by n2 and n3 within a second.
        const string blocked = "blocked@" + Fleet.RatedDomain;
        foreach (var node in fleet.Nodes)
            Assert.Equal(250, (await node.RcptReplyAsync(From, blocked)).Code);
        var add = await n1.CliAsync("suppress", "add", blocked, "--reason", "fleet test");
        Assert.True(add.ExitCode == 0, add.ToString());
        var added = Stopwatch.StartNew();
        Assert.Equal(550, (await n1.RcptReplyAsync(From, blocked)).Code);
        foreach (var node in new[] { n2, n3 })
        {
            int code = 0;
            while (added.Elapsed < TimeSpan.FromSeconds(1) && (code = (await node.RcptReplyAsync(From, blocked)).Code) != 550)
                await Task.Delay(50);
            log.WriteLine($"{node.Name}: RCPT for {blocked} answered {code} {added.Elapsed.TotalMilliseconds:0} ms after the add");
            checks.That(code == 550, $"(c) {node.Name} refuses {blocked} within a second of its suppression through n1");
        }

        // (d) fleet.test's host answers n2's first message with Gmail's 421 4.7.28: the site is suspended for the source on all three.
        int refusedOnce = 0;
        fleet.Rated.DataReply = a => a.PeerAddress == n2.Address.ToString() && Interlocked.Exchange(ref refusedOnce, 1) == 0 ? Rate4728 : "250 2.0.0 Ok";
        Assert.Equal(250, (await n2.SendAsync(From, "user@" + Fleet.RatedDomain, MessageText.Simple("rate-1@fleet.test"))).Code);
        await n2.Process.WaitForOutputAsync($"traffic: suspend on source {Fleet.Source} to site {Fleet.RatedSite}", Waits.Delivery);
        var suspended = Stopwatch.StartNew();
        foreach (var node in new[] { n1, n3 })
        {
            // Within a second of n2's action, and a CLI start or two to look (a process per look).
            JsonObject? action = null;
            while (suspended.Elapsed < TimeSpan.FromSeconds(2) && action is null)
            {
                action = (await node.TrafficStatusAsync())["actions"]!.AsArray()
                    .FirstOrDefault(a => (string?)a!["site"] == Fleet.RatedSite && (string?)a["source"] == Fleet.Source && (string?)a["action"] == "suspend") as JsonObject;
                if (action is null)
                    await Task.Delay(100);
            }
            log.WriteLine($"{node.Name}: traffic status {(action is null ? "shows no suspension" : "shows " + action.ToJsonString())} after {suspended.Elapsed.TotalMilliseconds:0} ms");
            checks.That(action is not null, $"(d) {node.Name}'s traffic status shows the suspension of {Fleet.RatedSite} for source {Fleet.Source} that n2 saw");
        }
        // While suspended, n1 sends nothing to the site; traffic resume through n3 lifts it on every node, and n1's message goes.
        Assert.Equal(250, (await n1.SendAsync(From, "user@" + Fleet.RatedDomain, MessageText.Simple("held-1@fleet.test"))).Code);
        await Task.Delay(3000);
        checks.That(!fleet.Rated.Messages.Any(m => m.PeerAddress == n1.Address.ToString()), "(d) n1 sends nothing to the suspended site");
        var resume = await n3.CliAsync("traffic", "resume", "--site", Fleet.RatedSite);
        log.WriteLine($"traffic resume through n3: exit {resume.ExitCode} {resume.Stdout.Trim()}");
        bool arrived = true;
        try
        {
            await fleet.Rated.WaitForMessageAsync(m => m.Header("Message-ID") == "<held-1@fleet.test>", TimeSpan.FromSeconds(15));
        }
        catch (TimeoutException)
        {
            arrived = false;
        }
        checks.That(arrived, "(d) after traffic resume through n3, n1's held message is delivered");
        checks.AssertAll(fleet.Describe);
    }
}
