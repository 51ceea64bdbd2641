using NativeRelay.Config;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// Traffic control on the delivery side in process (real spool, scheduler, loops and SMTP client;
/// DNS and peers on loopback: dest.test's MX is Peers[0], the senders' domain origin.test is
/// Peers[1]): the bounce and throttle actions, recipients per transaction, a site's connection
/// limit, and the message's pool surviving a restart.
/// </summary>
public sealed class TrafficDeliveryTests : IDisposable
{
    // The temporary directories the tests make (shaping files, spools): removed after each test.
    private readonly List<TempDir> _dirs = new();

    private TempDir NewDir(string prefix)
    {
        var dir = new TempDir(prefix);
        _dirs.Add(dir);
        return dir;
    }

    public void Dispose()
    {
        foreach (var dir in _dirs)
            dir.Dispose();
    }

    private const string Sender = "alice@origin.test";

    private static Action<RelayOptions> Shaping(TempDir dir, string json) => o =>
    {
        string path = Path.Combine(dir.Path, "shaping.json");
        File.WriteAllText(path, json);
        o.Traffic.Shaping = path;
    };

    private async Task<DeliveryWorld> WorldAsync(string shaping)
    {
        var dir = NewDir("nativerelay-shaping");
        var world = await DeliveryWorld.StartAsync(Shaping(dir, shaping));
        return world;
    }

    [Fact]
    public async Task A_bounce_action_returns_the_paths_mail_without_another_transaction()
    {
        await using var world = await WorldAsync("""
            { "automation": [ { "name": "blocked", "code": 554, "text": "blocked", "action": "bounce", "duration": "10m" } ] }
            """);
        var peer = world.Peers[0];
        peer.DataReply = _ => "554 5.7.1 Service unavailable; client host blocked";

        await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["one@dest.test"]), MessageText.Simple("one@test"));
        await peer.WaitUntilAsync(() => peer.DataAttemptCount == 1, Waits.Delivery, "the refused transaction");
        await world.WaitUntilAsync(() => world.Scheduler.Traffic.Status().Actions.Count == 1, "the bounce action in force");
        // The rule acts on (default source, site mx.dest.test): what comes next fails at once.
        for (int i = 0; i < 3; i++)
            await world.QueueAsync(DeliveryWorld.Envelope(Sender, [$"more{i}@dest.test"]), MessageText.Simple($"more{i}@test"));
        var notices = world.Peers[1];
        await notices.WaitUntilAsync(() => notices.Messages.Count(m => m.MailFrom == "") >= 4, Waits.Delivery, "four notifications");
        Assert.Equal(1, peer.DataAttemptCount);
        var dsn = DsnMessage.Parse(notices.Messages.First(m => m.MailFrom == "" && m.DataText.Contains("more0@test", StringComparison.Ordinal)).Data);
        Assert.Contains("traffic rule blocked bounces mail from source default to site mx.dest.test",
            System.Text.RegularExpressions.Regex.Replace(dsn.Text, @"\s+", " "));
    }

    [Fact]
    public async Task A_too_many_connections_reply_throttles_the_path_to_one_connection()
    {
        await using var world = await WorldAsync("""{ "rules": [ { "site": "mx.dest.test", "maxConnections": 8 } ] }""");
        var peer = world.Peers[0];
        peer.DataDelay = TimeSpan.FromMilliseconds(100);
        int refused = 0;
        peer.RcptReply = to => Interlocked.Exchange(ref refused, 1) == 0 ? "421 4.7.0 Error: too many connections from 127.0.0.1" : "250 2.1.5 Ok";

        await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["first@dest.test"]), MessageText.Simple("first@test"));
        await peer.WaitUntilAsync(() => refused == 1, Waits.Delivery, "the refusal");
        await world.WaitUntilAsync(() => world.Scheduler.Traffic.Status().Actions.Count == 1, "the throttle in force");
        int before = peer.MaxConcurrentConnections;
        for (int i = 0; i < 30; i++)
            await world.QueueAsync(DeliveryWorld.Envelope(Sender, [$"r{i}@dest.test"]), MessageText.Simple($"r{i}@test"));
        await peer.WaitUntilAsync(() => peer.Messages.Count >= 30, Waits.Delivery, "30 messages");
        // Under the throttle (the default rule: one connection for 30 minutes) the 30 went one at a time.
        Assert.True(peer.MaxConcurrentConnections <= Math.Max(before, 1), $"{peer.MaxConcurrentConnections} connections at once (before the throttle: {before})");
        var status = world.Scheduler.Traffic.Status();
        var action = Assert.Single(status.Actions);
        Assert.Equal("throttle", action.Action);
        Assert.Equal("too-many-connections", action.Rule);
    }

    [Fact]
    public async Task Recipients_per_transaction_split_a_message_into_several_transactions()
    {
        await using var world = await WorldAsync("""{ "rules": [ { "site": "mx.dest.test", "recipientsPerTransaction": 2 } ] }""");
        var peer = world.Peers[0];
        var message = await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["a@dest.test", "b@dest.test", "c@dest.test", "d@dest.test", "e@dest.test"]),
            MessageText.Simple("five@test"));
        await world.WaitUntilGoneAsync(message);
        Assert.Equal([2, 2, 1], peer.Messages.Select(m => m.Recipients.Count));
    }

    [Fact]
    public async Task A_sites_connection_limit_holds_over_many_messages()
    {
        await using var world = await WorldAsync("""{ "default": { "maxConnections": 2 } }""");
        var peer = world.Peers[0];
        peer.DataDelay = TimeSpan.FromMilliseconds(50);
        for (int i = 0; i < 40; i++)
            await world.QueueAsync(DeliveryWorld.Envelope(Sender, [$"r{i}@dest.test"]), MessageText.Simple($"c{i}@test"));
        await peer.WaitUntilAsync(() => peer.Messages.Count >= 40, Waits.Delivery, "40 messages");
        Assert.Equal(2, peer.MaxConcurrentConnections);
    }

    [Fact]
    public async Task The_pool_stored_with_a_message_outlives_a_restart()
    {
        var dir = NewDir("nativerelay-pool");
        await using var world = await DeliveryWorld.StartAsync(o =>
        {
            o.Traffic.Sources["ip5"] = new SourceOptions { Address = "127.0.0.5", Ehlo = "mta5.test" };
            o.Traffic.Sources["ip6"] = new SourceOptions { Address = "127.0.0.6", Ehlo = "mta6.test" };
            o.Traffic.Pools["five"] = new PoolOptions { Sources = new() { ["ip5"] = 1 } };
            o.Traffic.Pools["six"] = new PoolOptions { Sources = new() { ["ip6"] = 1 } };
            o.Traffic.DefaultPool = "five";
        });
        var peer = world.Peers[0];
        peer.RcptReply = _ => "451 4.3.0 try again later";
        var envelope = DeliveryWorld.Envelope(Sender, ["later@dest.test"]);
        envelope = new NativeRelay.Spool.Envelope
        {
            Sender = envelope.Sender, Recipients = envelope.Recipients, ClientAddress = envelope.ClientAddress,
            HeloName = envelope.HeloName, ArrivalUnixMs = envelope.ArrivalUnixMs, Pool = "six",
        };
        await world.QueueAsync(envelope, MessageText.Simple("later@test"));
        await peer.WaitUntilAsync(() => peer.EhloCount > 0, Waits.Delivery, "a first attempt");
        await world.RestartAsync();
        world.Peers[0].RcptReply = null;
        var got = await world.Peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == "<later@test>", "the message after the restart");
        Assert.Equal("mta6.test", got.Helo);
    }

    [Fact]
    public async Task A_source_the_site_refuses_hands_its_mail_to_another_source_of_the_pool()
    {
        await using var world = await DeliveryWorld.StartAsync(o =>
        {
            o.Traffic.Sources["ip5"] = new SourceOptions { Address = "127.0.0.5", Ehlo = "mta5.test" };
            o.Traffic.Sources["ip6"] = new SourceOptions { Address = "127.0.0.6", Ehlo = "mta6.test" };
        });
        var peer = world.Peers[0];
        peer.GreetingFrom = client => client == "127.0.0.5" ? "554 5.7.1 Service unavailable; client host [127.0.0.5] blocked" : null;
        var queued = new List<NativeRelay.Delivery.QueuedMessage>();
        for (int i = 0; i < 6; i++)
            queued.Add(await world.QueueAsync(DeliveryWorld.Envelope(Sender, [$"r{i}@dest.test"]), MessageText.Simple($"moved{i}@test")));
        // Half were given ip5 first (equal weights); each moved to ip6 in the same round, none waits for a retry.
        foreach (var m in queued)
            await world.WaitUntilGoneAsync(m);
        Assert.Equal(6, peer.Messages.Count);
        Assert.All(peer.Messages, m => Assert.Equal("127.0.0.6", m.Client));
        Assert.All(peer.Messages, m => Assert.Equal("mta6.test", m.Helo));
        Assert.All(queued, m => Assert.Equal(1, m.Attempts)); // delivered by their first round
    }
}
