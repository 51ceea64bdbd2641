using System.Text;
using System.Text.Json;
using NativeRelay.Config;
using NativeRelay.Events;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Events;

/// <summary>
/// The events stage in process against a real HTTP receiver on loopback: signed batches in
/// order, retries with the same ids, the cursor across a restart, filters, the backlog bound.
/// </summary>
public sealed class WebhookSinkTests : IDisposable
{
    private const string Secret = "whsec_unit";
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);
    private readonly TempDir _dir = new("nativerelay-webhook");
    private readonly MemoryStream _logOutput = new();
    private readonly Log _log;
    private readonly string _secretFile;

    public WebhookSinkTests()
    {
        _log = new Log(_logOutput, LogLevel.Info, LogFormat.Text);
        _secretFile = _dir.File("secret");
        File.WriteAllText(_secretFile, Secret + "\n");
    }

    public void Dispose()
    {
        _log.Dispose();
        _dir.Dispose();
    }

    private string LogText()
    {
        _log.Flush();
        return Encoding.UTF8.GetString(_logOutput.ToArray());
    }

    private WebhookOptions Hook(WebhookReceiver receiver, string name) => new()
    {
        Name = name, Url = receiver.Url, SecretFile = _secretFile, BatchSize = 100, BatchMilliseconds = 50, MaxRetrySeconds = 1,
    };

    private EventPublisher Start(params WebhookOptions[] hooks) =>
        (EventPublisher)EventPublisher.Start(EventsSettings.Validate(new EventsOptions { Webhooks = [.. hooks] }), _dir.Path, _log);

    private static RelayEvent Event(int i, RelayEventType type = RelayEventType.Delivery, string? pool = null) => new()
    {
        Type = type, QueueId = (ulong)(1000 + i), Recipient = Encoding.UTF8.GetBytes($"r{i}@example.org"), Sender = "s@example.com"u8.ToArray(), Pool = pool,
    };

    private static int N(JsonElement e) => int.Parse(e.Str("recipient")[1..e.Str("recipient").IndexOf('@')]);

    [Fact]
    public async Task Events_arrive_in_order_in_signed_batches_and_the_cursor_follows()
    {
        using var receiver = new WebhookReceiver(Secret).Start();
        await using (var events = Start(Hook(receiver, "a")))
        {
            for (int i = 0; i < 250; i++)
                events.Publish(Event(i));
            var got = await receiver.WaitForAsync(e => e.Count >= 250, Wait, "250 events");
            Assert.Equal(Enumerable.Range(0, 250), got.Select(N));
            Assert.Equal(250, got.Select(e => e.Id()).Distinct().Count());
            Assert.All(receiver.Posts, p => Assert.True(p.SignatureValid, $"bad signature {p.Signature}"));
            Assert.All(receiver.Posts, p => Assert.InRange(p.Events.Length, 1, 100));
            Assert.All(got, e => Assert.StartsWith(events.Journal.Id, e.Id()));
            await WaitUntil(() => events.Sinks[0].Acknowledged == 250, "the cursor at 250");
        }
        Assert.Equal("250", File.ReadAllText(Path.Combine(_dir.Path, "events", "cursor.a")).Trim());
    }

    [Fact]
    public async Task A_failing_receiver_gets_every_event_with_the_same_ids_once_it_answers_again()
    {
        using var receiver = new WebhookReceiver(Secret) { Status = 503 }.Start();
        long failedBefore = EventMetrics.Failed.Get("failing");
        await using var events = Start(Hook(receiver, "failing"));
        for (int i = 0; i < 30; i++)
            events.Publish(Event(i));
        await WaitUntil(() => receiver.Posts.Count >= 2, "two refused POSTs");
        receiver.Status = 200;
        var got = await receiver.WaitForAsync(e => e.Count >= 30, Wait, "30 events after the receiver came back");
        Assert.Equal(Enumerable.Range(0, 30), got.Select(N));
        var refused = receiver.Posts.First(p => p.AnsweredWith == 503);
        Assert.Equal(refused.Events.Select(e => e.Id()), got.Take(refused.Events.Length).Select(e => e.Id()));
        Assert.True(EventMetrics.Failed.Get("failing") - failedBefore >= 2);
        Assert.Contains("webhook failing: POST of", LogText());
    }

    [Fact]
    public async Task A_restarted_publisher_sends_from_its_cursor_nothing_acknowledged_again()
    {
        using var receiver = new WebhookReceiver(Secret).Start();
        await using (var events = Start(Hook(receiver, "r")))
        {
            for (int i = 0; i < 10; i++)
                events.Publish(Event(i));
            await receiver.WaitForAsync(e => e.Count >= 10, Wait, "the first 10");
            await WaitUntil(() => events.Sinks[0].Acknowledged == 10, "the cursor at 10");
        }
        receiver.Stop();
        await using (var events = Start(Hook(receiver, "r")))
        {
            for (int i = 10; i < 20; i++)
                events.Publish(Event(i));
            await events.DurableAsync();
        }
        receiver.Start();
        await using (var events = Start(Hook(receiver, "r")))
        {
            var got = await receiver.WaitForAsync(e => e.Count >= 20, Wait, "the next 10 after the restart");
            Assert.Equal(Enumerable.Range(0, 20), got.Select(N));
        }
    }

    [Fact]
    public async Task Each_webhook_gets_only_the_types_and_pools_it_asked_for()
    {
        using var bounces = new WebhookReceiver(Secret).Start();
        using var pool1 = new WebhookReceiver(Secret).Start();
        using var all = new WebhookReceiver(Secret).Start();
        var bounceHook = Hook(bounces, "bounces");
        bounceHook.Types = ["bounce", "expiry"];
        var poolHook = Hook(pool1, "pool1");
        poolHook.Pools = ["p1"];
        await using var events = Start(bounceHook, poolHook, Hook(all, "all"));
        for (int i = 0; i < 40; i++)
            events.Publish(Event(i, i % 4 == 0 ? RelayEventType.Bounce : RelayEventType.Delivery, i % 2 == 0 ? "p1" : null));
        await all.WaitForAsync(e => e.Count >= 40, Wait, "every event at the unfiltered webhook");
        await WaitUntil(() => events.Sinks.All(s => s.Acknowledged == 40), "every cursor at 40");
        Assert.Equal(Enumerable.Range(0, 40).Where(i => i % 4 == 0), bounces.Accepted.Select(N));
        Assert.All(bounces.Accepted, e => Assert.Equal("bounce", e.Type()));
        Assert.Equal(Enumerable.Range(0, 40).Where(i => i % 2 == 0), pool1.Accepted.Select(N));
        Assert.All(pool1.Accepted, e => Assert.Equal("p1", e.Str("pool")));
    }

    [Fact]
    public async Task Over_the_backlog_bound_the_oldest_are_dropped_counted_and_logged()
    {
        using var receiver = new WebhookReceiver(Secret); // down: connections refused
        var hook = Hook(receiver, "bounded");
        hook.MaxBacklog = 10;
        long droppedBefore = EventMetrics.Dropped.Get("bounded");
        await using var events = Start(hook);
        for (int i = 0; i < 50; i++)
            events.Publish(Event(i));
        await events.DurableAsync();
        await WaitUntil(() => EventMetrics.Dropped.Get("bounded") - droppedBefore >= 40, "40 events dropped");
        Assert.True(events.Sinks[0].Backlog <= 10);
        Assert.Equal(events.Sinks[0].Backlog, EventMetrics.Backlog.Get("bounded"));
        receiver.Start();
        var got = await receiver.WaitForAsync(e => e.Any(x => N(x) == 49), Wait, "the newest event");
        Assert.Equal(Enumerable.Range(40, 10), got.Select(N));
        Assert.Contains("webhook bounded: backlog over maxBacklog 10: dropped the oldest", LogText());
    }

    [Fact]
    public void Bad_webhook_options_are_refused_with_the_option_named()
    {
        void Refused(string expected, Action<WebhookOptions> change)
        {
            var o = new WebhookOptions { Url = "http://127.0.0.1:1/h", SecretFile = _secretFile };
            change(o);
            var e = Assert.Throws<ConfigException>(() => EventsSettings.Validate(new EventsOptions { Webhooks = [o] }));
            Assert.Contains(expected, e.Message);
        }
        Refused("events.webhooks[0].url", o => o.Url = "ftp://x/");
        Refused("events.webhooks[0].url", o => o.Url = "http://user:pw@x/");
        Refused("events.webhooks[0].secretFile", o => o.SecretFile = null);
        Refused("'deliveries' is not an event type", o => o.Types = ["deliveries"]);
        Refused("events.webhooks[0].batchSize", o => o.BatchSize = 0);
        Refused("events.webhooks[0].maxBacklog", o => o.MaxBacklog = 0);
        Refused("events.webhooks[0].pools", o => o.Pools = []);
        var twice = new EventsOptions
        {
            Webhooks = [new WebhookOptions { Url = "http://a/", SecretFile = "s" }, new WebhookOptions { Url = "http://a/", SecretFile = "s" }],
        };
        Assert.Contains("a second webhook named", Assert.Throws<ConfigException>(() => EventsSettings.Validate(twice)).Message);
        File.WriteAllText(_secretFile, "\n");
        var empty = EventsSettings.Validate(new EventsOptions { Webhooks = [new WebhookOptions { Url = "http://a/", SecretFile = _secretFile }] });
        Assert.Contains("is empty", Assert.Throws<ConfigException>(() => empty.Webhooks[0].ReadSecret()).Message);
    }

    private static async Task WaitUntil(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Wait;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
                throw new Xunit.Sdk.XunitException($"{what}: not within {Wait.TotalSeconds:0} s");
            await Task.Delay(20);
        }
    }
}
