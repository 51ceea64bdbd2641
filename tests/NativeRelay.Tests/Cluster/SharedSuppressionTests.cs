using System.Text;
using NativeRelay.Api;
using NativeRelay.Cluster;
using NativeRelay.Config;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;
using NativeRelay.Traffic.Suppression;

namespace NativeRelay.Tests.Cluster;

/// <summary>
/// One suppression list for a fleet, through a real redis-server: each node is its own
/// ClusterNode with its own SuppressionList (journal and outbox) in its own directory.
/// </summary>
public sealed class SharedSuppressionTests : IAsyncLifetime
{
    private static readonly TimeSpan Soon = TimeSpan.FromSeconds(5);
    private TestRedis _redis = null!;
    private readonly List<Node> _nodes = new();
    private readonly List<TempDir> _dirs = new();

    public async Task InitializeAsync() => _redis = await TestRedis.StartAsync();

    public async Task DisposeAsync()
    {
        foreach (var n in _nodes)
            await n.DisposeAsync();
        await _redis.DisposeAsync();
        foreach (var d in _dirs)
            d.Dispose();
    }

    private sealed class Node(string name, string directory, ClusterNode cluster, SuppressionList list, StringWriter text, TextWriter writer, Log log) : IAsyncDisposable
    {
        private bool _disposed;
        public string Name => name;
        public string Directory => directory;
        public ClusterNode Cluster => cluster;
        public SuppressionList List => list;
        public SharedSuppression Shared => cluster.Suppression!;
        public string LogText { get { log.Flush(); lock (writer) return text.ToString(); } }

        public bool Refuses(string address, string? pool = null, string senderDomain = "") =>
            list.IsSuppressed(Encoding.UTF8.GetBytes(address), pool, Encoding.UTF8.GetBytes(senderDomain));

        public bool Add(string address, SuppressionScope scope = default)
        {
            bool added = list.TryAdd(Encoding.UTF8.GetBytes(address), scope, "test", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
            list.Commit();
            return added;
        }

        public bool Remove(string address, SuppressionScope scope = default)
        {
            bool removed = list.Remove(Encoding.UTF8.GetBytes(address), scope);
            list.Commit();
            return removed;
        }

        public async ValueTask DisposeAsync()
        {
            if (_disposed)
                return;
            _disposed = true;
            await cluster.StopSharingSuppressionAsync();
            list.Dispose();
            await cluster.DisposeAsync();
            log.Dispose();
        }
    }

    private async Task<Node> StartNodeAsync(string name, string? directory = null)
    {
        if (directory is null)
        {
            var dir = new TempDir("nativerelay-cluster");
            _dirs.Add(dir);
            directory = dir.Path;
        }
        var text = new StringWriter();
        var writer = TextWriter.Synchronized(text);
        var log = new Log(writer);
        var settings = ClusterSettings.Validate(new ClusterOptions { Redis = _redis.ConnectionString, Node = name, HeartbeatSeconds = 1, LeaseSeconds = 5 }, "relay.test")!;
        var cluster = await ClusterNode.StartAsync(settings, () => new NodeFacts(0, 0, 0, "test"), log);
        var list = SuppressionList.Open(directory, log);
        await cluster.ShareSuppressionAsync(list, log);
        var node = new Node(name, directory, cluster, list, text, writer, log);
        _nodes.Add(node);
        return node;
    }

    [Fact]
    public async Task A_recipient_suppressed_through_one_node_is_refused_by_the_others_and_a_removal_on_another_node_lifts_it_everywhere()
    {
        var a = await StartNodeAsync("a");
        var b = await StartNodeAsync("b");
        var c = await StartNodeAsync("c");

        Assert.True(a.Add("Bounced@Example.COM"));
        await Waits.UntilAsync(() => b.Refuses("bounced@example.com") && c.Refuses("BOUNCED@example.com"), Soon,
            "nodes b and c refuse the recipient suppressed through node a");
        Assert.False(b.Refuses("other@example.com"));
        await Waits.UntilAsync(() => b.LogText.Contains("<bounced@example.com> added (global) from node a"), Soon, "node b logs the change and its node");
        Assert.Equal(1, b.List.Count);
        Assert.Contains(b.List.Entries(), e => e.Address == "bounced@example.com" && e.Reason == "test");

        // A pool's entry and an unsubscribe (a sender domain's entry, through the HTTP side's recorder) hold for their scope only.
        Assert.True(b.Add("pooled@example.net", SuppressionScope.Pool("news")));
        await new SuppressionUnsubscribeRecorder(c.List).RecordAsync("reader@example.org", "shop.example", "weekly");
        await Waits.UntilAsync(() => a.Refuses("pooled@example.net", pool: "news") && a.Refuses("reader@example.org", senderDomain: "shop.example"),
            Soon, "node a refuses the pool's entry and the unsubscribe");
        Assert.False(a.Refuses("pooled@example.net", pool: "other"));
        Assert.False(a.Refuses("reader@example.org", senderDomain: "elsewhere.example"));

        // Removed through node c (not the one that added it): lifted on a and b.
        Assert.True(c.Remove("bounced@example.com"));
        await Waits.UntilAsync(() => !a.Refuses("bounced@example.com") && !b.Refuses("bounced@example.com"), Soon,
            "the removal through node c reaches a and b");
        Assert.Equal("0", await _redis.CommandAsync("HEXISTS", "nativerelay:{suppression}", "global\nbounced@example.com"));
        Assert.Equal("2", await _redis.CommandAsync("HLEN", "nativerelay:{suppression}"));
        Assert.Equal(0, a.Shared.Pending);
        // Applying the fleet's changes did not send them again: one stream entry per change.
        Assert.Equal("4", await _redis.CommandAsync("XLEN", "nativerelay:{suppression}:changes"));
    }

    [Fact]
    public async Task A_node_started_later_loads_the_list_and_a_node_joining_with_its_own_entries_adds_them_to_the_fleets()
    {
        var a = await StartNodeAsync("a");
        a.Add("one@example.com");
        a.Add("two@example.com");
        await Waits.UntilAsync(() => _redis.CommandAsync("HLEN", "nativerelay:{suppression}").Result == "2", Soon, "node a's entries are in Redis");

        // A relay that kept a list of its own before it joined the fleet.
        var dir = new TempDir("nativerelay-cluster");
        _dirs.Add(dir);
        using (var log = new Log(TextWriter.Null))
        using (var own = SuppressionList.Open(dir.Path, log))
        {
            own.Add(Encoding.UTF8.GetBytes("mine@example.com"), SuppressionScope.Global, "before the fleet");
            own.Commit();
        }
        var late = await StartNodeAsync("late", dir.Path);
        Assert.True(late.Refuses("one@example.com"));
        Assert.True(late.Refuses("two@example.com"));
        Assert.True(late.Refuses("mine@example.com"));
        await Waits.UntilAsync(() => a.Refuses("mine@example.com"), Soon, "node a refuses the entry the joining node brought");
    }

    [Fact]
    public async Task Changes_made_while_Redis_is_away_are_kept_across_a_restart_and_reach_the_others_when_it_is_back()
    {
        var a = await StartNodeAsync("a");
        var b = await StartNodeAsync("b");
        Assert.True(a.Add("kept@example.com"));
        await Waits.UntilAsync(() => b.Refuses("kept@example.com"), Soon, "node b has the first entry");

        await _redis.StopAsync();
        await Waits.UntilAsync(() => a.Cluster.Degraded && b.Cluster.Degraded, TimeSpan.FromSeconds(30), "both nodes see Redis away");
        // Local behaviour: the changes are made and probed here, nothing fails.
        Assert.True(a.Add("offline@example.com"));
        Assert.True(a.Refuses("offline@example.com"));
        Assert.True(b.Add("from-b@example.com"));
        Assert.Equal(1, a.Shared.Pending);

        // Node a restarts while Redis is away: its unsent change is in its outbox on disk.
        string directory = a.Directory;
        await a.DisposeAsync();
        Assert.True(File.Exists(Path.Combine(directory, SuppressionList.DirectoryName, "cluster-outbox")));
        var a2 = await StartNodeAsync("a", directory);
        Assert.True(a2.Cluster.Degraded);
        Assert.Equal(1, a2.Shared.Pending);
        Assert.True(a2.Refuses("offline@example.com"));
        Assert.False(b.Refuses("offline@example.com"));

        // An empty Redis comes back (no persistence): the nodes put their entries back and get each other's.
        await _redis.StartAgainAsync();
        await Waits.UntilAsync(() => b.Refuses("offline@example.com") && a2.Refuses("from-b@example.com"), TimeSpan.FromSeconds(30),
            "the changes made while Redis was away reach the other node");
        Assert.True(a2.Refuses("kept@example.com"));
        Assert.True(b.Refuses("kept@example.com"));
        await Waits.UntilAsync(() => a2.Shared.Pending == 0, Soon, "node a's outbox is empty");
        Assert.Equal("3", await _redis.CommandAsync("HLEN", "nativerelay:{suppression}"));
    }

    [Fact]
    public async Task A_node_that_restarts_follows_on_from_its_place_in_the_stream_and_gets_what_it_missed_without_loading_the_list()
    {
        var a = await StartNodeAsync("a");
        var b = await StartNodeAsync("b");
        a.Add("before@example.com");
        await Waits.UntilAsync(() => b.Refuses("before@example.com"), Soon, "node b follows");
        Assert.Contains("suppression list loaded from the fleet", b.LogText); // its first start

        string directory = b.Directory;
        await b.DisposeAsync();
        a.Add("while-down@example.com");
        a.Remove("before@example.com");
        await Waits.UntilAsync(() => a.Shared.Pending == 0, Soon, "node a sent its changes");

        var b2 = await StartNodeAsync("b", directory);
        await Waits.UntilAsync(() => b2.Refuses("while-down@example.com") && !b2.Refuses("before@example.com"), Soon,
            "the restarted node gets the changes made while it was down");
        Assert.DoesNotContain("suppression list loaded from the fleet", b2.LogText);
        Assert.Contains("<while-down@example.com> added (global) from node a", b2.LogText);
    }

    [Fact]
    public async Task A_follower_whose_place_in_the_stream_was_trimmed_away_loads_the_whole_list()
    {
        var a = await StartNodeAsync("a");
        var b = await StartNodeAsync("b");
        a.Add("early@example.com");
        await Waits.UntilAsync(() => b.Refuses("early@example.com"), Soon, "node b follows");

        b.Shared.PausedForTests = true; // b stops reading the stream (a slow node)
        await Task.Delay(300);
        for (int i = 0; i < 30; i++)
            a.Add($"bulk{i}@example.com");
        a.Remove("early@example.com");
        await Waits.UntilAsync(() => a.Shared.Pending == 0, Soon, "node a sent its changes");
        // The stream keeps only its last change (the removal): the 30 additions are gone from it.
        Assert.Equal("31", await _redis.CommandAsync("XTRIM", "nativerelay:{suppression}:changes", "MAXLEN", "1"));
        Assert.False(b.Refuses("bulk0@example.com"));

        b.Shared.PausedForTests = false;
        await Waits.UntilAsync(() => b.Refuses("bulk0@example.com") && b.Refuses("bulk29@example.com") && !b.Refuses("early@example.com"),
            Soon, "node b loads the list (and drops the entry removed meanwhile)");
        Assert.Contains("were trimmed before node b read them", b.LogText);
        Assert.Equal(30, b.List.Count);
    }
}
