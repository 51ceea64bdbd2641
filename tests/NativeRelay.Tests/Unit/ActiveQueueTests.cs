using NativeRelay.Delivery;
using NativeRelay.Spool;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// The hot/cold split of the delivery side: a message waiting for its retry has no object (its
/// spool index slot and a retry heap entry are all it costs), only a bounded active set is being
/// attempted, and recovery feeds the backlog to delivery within that limit.
/// </summary>
public sealed class ActiveQueueTests
{
    private const string Sender = "alice@origin.test";

    private static Task<DeliveryWorld> StartAsync(int activeLimit = 20_000, int retrySeconds = 3600) =>
        DeliveryWorld.StartAsync(o =>
        {
            o.Delivery.ActiveLimit = activeLimit;
            o.Delivery.RetryInitialSeconds = retrySeconds;
            o.Delivery.RetryMaxSeconds = retrySeconds;
        });

    private static async Task<List<QueuedMessage>> DeferAsync(DeliveryWorld world, int count, string tag, params string[] recipients)
    {
        var queued = new List<QueuedMessage>();
        for (int i = 0; i < count; i++)
            queued.Add(await world.QueueAsync(DeliveryWorld.Envelope(Sender, recipients.Length > 0 ? recipients : ["r@dest.test"]),
                MessageText.Simple($"{tag}{i}@test")));
        await world.WaitUntilAsync(() => queued.All(m => world.Scheduler.Show(m.IdText) is { Attempts: >= 1, NextAttempt: not null })
                                         && world.Scheduler.ActiveCount == 0, $"{count} message(s) deferred and cold");
        return queued;
    }

    [Fact]
    public async Task A_deferred_message_goes_cold_and_keeps_its_last_error_and_next_attempt()
    {
        await using var world = await StartAsync();
        world.Peers[0].DataReply = _ => "451 4.3.0 not now";
        var message = Assert.Single(await DeferAsync(world, 1, "cold"));

        Assert.Equal(0, world.Scheduler.ActiveCount);
        Assert.Equal(1, world.Scheduler.LiveCount);
        var entry = world.Scheduler.Show(message.IdText)!;
        Assert.Contains("451 4.3.0 not now", entry.LastError);
        Assert.True(entry.NextAttempt > DateTimeOffset.UtcNow.AddMinutes(30));
        Assert.Equal(["r@dest.test"], entry.PendingRecipients);
        var stats = world.Scheduler.Stats();
        Assert.Equal((0, 1, 0), (stats.Active, stats.Deferred, stats.Held));
        Assert.Equal((0, 1, 0), world.Scheduler.Counts()); // the metrics' counters agree with the walk
        Assert.Equal(1, Assert.Single(stats.ByDestination).Value); // its last destination, kept while cold

        // Flushed, it is warmed up again (envelope read back from the spool) and delivered.
        world.Peers[0].DataReply = null;
        Assert.Equal(1, await world.Scheduler.FlushAsync(QueueSelector.ForId(message.IdText)));
        await world.WaitUntilGoneAsync(message);
        Assert.Single(world.Peers[0].Messages);
        Assert.Equal(0, world.Scheduler.ActiveCount);
    }

    [Fact]
    public async Task A_partly_delivered_message_keeps_its_recipients_states_while_cold()
    {
        await using var world = await StartAsync();
        world.Peers[0].RcptReply = to => to.StartsWith("s@", StringComparison.Ordinal) ? "451 4.2.0 try later" : "250 2.1.5 Ok";
        var message = Assert.Single(await DeferAsync(world, 1, "partial", "r@dest.test", "s@dest.test"));
        Assert.Equal(["s@dest.test"], world.Scheduler.Show(message.IdText)!.PendingRecipients);

        world.Peers[0].RcptReply = null;
        Assert.Equal(1, await world.Scheduler.FlushAsync(QueueSelector.ForDomain("dest.test")));
        await world.WaitUntilGoneAsync(message);
        Assert.Equal(2, world.Peers[0].Messages.Count);
        Assert.Equal(["s@dest.test"], world.Peers[0].Messages[1].Recipients);
    }

    [Fact]
    public async Task A_recovered_backlog_is_attempted_within_the_active_limit_and_new_mail_still_gets_through()
    {
        const int limit = 3, backlog = 24;
        await using var world = await StartAsync(activeLimit: limit);
        world.Peers[0].DataReply = _ => "451 4.3.0 not now";
        await DeferAsync(world, backlog, "backlog");

        // The restart makes the whole backlog due at once; the peer now accepts, slowly.
        world.Peers[0].DataReply = null;
        world.Peers[0].DataDelay = TimeSpan.FromMilliseconds(200);
        await world.RestartAsync();
        Assert.Equal(backlog, world.Recovered.Count);
        await world.Peers[0].WaitUntilAsync(() => world.Peers[0].Messages.Count >= 2, Waits.Delivery, "the backlog draining");

        // New mail while the backlog drains: it takes its turn, it does not wait for the backlog's end.
        var fresh = await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["n@dest.test"]), MessageText.Simple("fresh@test"));
        await world.WaitUntilGoneAsync(fresh);
        int before = world.Peers[0].Messages.Count(m => m.Recipients.Contains("r@dest.test"));
        Assert.True(before < backlog, $"the new message was delivered after all {before} backlog messages");

        await world.WaitUntilAsync(() => world.Scheduler.LiveCount == 0, "the backlog delivered");
        Assert.Equal(backlog + 1, world.Peers[0].Messages.Select(m => m.Header("Message-ID")).Distinct().Count());
        Assert.InRange(world.Scheduler.ActivePeak, 1, limit);
    }

    [Fact]
    public async Task Admin_verbs_work_on_cold_messages_and_a_held_one_stays_held_across_restarts()
    {
        await using var world = await StartAsync();
        world.Peers[0].DataReply = _ => "451 4.3.0 not now";
        var queued = await DeferAsync(world, 4, "admin");
        var (held, deleted, returned, flushed) = (queued[0], queued[1], queued[2], queued[3]);

        Assert.Equal(1, await world.Scheduler.HoldAsync(QueueSelector.ForId(held.IdText)));
        Assert.Equal(1, await world.Scheduler.DeleteAsync(QueueSelector.ForId(deleted.IdText)));
        Assert.Equal(1, await world.Scheduler.BounceAsync(QueueSelector.ForId(returned.IdText)));
        await world.Peers[1].WaitForMessageAsync(m => m.MailFrom == "", "the notification of the returned message");
        await world.WaitUntilAsync(() => world.Scheduler.LiveCount == 2 && world.Scheduler.ActiveCount == 0,
            "only the held one and the last one queued, no object left behind by a command");

        Assert.True(world.Scheduler.Show(held.IdText)!.Held);
        Assert.Equal((0, 1, 1), world.Scheduler.Counts()); // hold, delete and return kept the counters right
        Assert.Null(world.Scheduler.Show(deleted.IdText));
        Assert.Null(world.Scheduler.Show(returned.IdText));
        Assert.Equal([held.IdText, flushed.IdText], world.Scheduler.List(null, null).Select(e => e.Id));

        // Restart: the held one stays held (not attempted), the other is attempted again at once.
        await world.RestartAsync();
        Assert.Equal([held.Id, flushed.Id], world.Recovered.Select(r => r.Id).Order());
        Assert.True(world.Recovered.Single(r => r.Id == held.Id).Held);
        await world.WaitUntilAsync(() => world.Scheduler.Show(flushed.IdText) is { Attempts: 2, NextAttempt: not null }, "the other one attempted after the restart");
        var stats = world.Scheduler.Stats();
        Assert.Equal((0, 1, 1), (stats.Active, stats.Deferred, stats.Held));
        Assert.Equal((0, 1, 1), world.Scheduler.Counts()); // counters rebuilt by recovery agree with the walk
        Assert.Equal(1, world.Scheduler.Show(held.IdText)!.Attempts);
        Assert.Contains("451 4.3.0 not now", world.Scheduler.Show(flushed.IdText)!.LastError);

        // Still held after a second restart; released, it is delivered.
        await world.RestartAsync();
        Assert.True(world.Scheduler.Show(held.IdText)!.Held);
        await world.WaitUntilAsync(() => world.Scheduler.Show(flushed.IdText) is { Attempts: 3, NextAttempt: not null }, "the restart's attempt over");
        world.Peers[0].DataReply = null;
        Assert.Equal(1, await world.Scheduler.ReleaseAsync(QueueSelector.ForId(held.IdText)));
        Assert.Equal(1, await world.Scheduler.FlushAsync(QueueSelector.ForId(flushed.IdText)));
        await world.WaitUntilGoneAsync(held);
        await world.WaitUntilGoneAsync(flushed);
        Assert.Equal(0, world.Scheduler.LiveCount);
        Assert.Equal(0, world.Scheduler.ActiveCount);
    }

    [Fact]
    public void Retry_heap_orders_by_due_time_then_arrival_and_compacts_stale_entries()
    {
        var heap = new DeferredQueue();
        heap.Schedule(30, 5);
        heap.Schedule(20, 5);
        heap.Schedule(10, 7);
        heap.Schedule(40, 1);
        Assert.False(heap.TryTakeDue(0, out _));
        Assert.True(heap.TryTakeDue(6, out var a));
        Assert.True(heap.TryTakeDue(6, out var b));
        Assert.True(heap.TryTakeDue(6, out var c));
        Assert.Equal([40ul, 20ul, 30ul], new[] { a.Id, b.Id, c.Id });
        Assert.False(heap.TryTakeDue(6, out _));
        for (uint i = 0; i < 2000; i++)
            heap.Schedule(i + 100, i % 50);
        heap.Compact((id, _) => id % 2 == 0);
        Assert.Equal(1001, heap.Count); // the even ids, and id 10
        ulong last = 0;
        uint lastDue = 0;
        while (heap.TryTakeDue(uint.MaxValue, out var e))
        {
            Assert.True(e.Due > lastDue || (e.Due == lastDue && e.Id > last));
            (lastDue, last) = (e.Due, e.Id);
        }
    }

    [Fact]
    public void Index_text_table_shares_and_reuses_error_ids()
    {
        var index = new SpoolIndex();
        for (int i = 1; i <= 100; i++)
            index.Add((ulong)i, i * 100, i * 100, 10, 1);
        for (int i = 1; i <= 100; i++)
        {
            index.TakeIntake((ulong)i);
            index.Cool((ulong)i, 1000, i % 2 == 0 ? "451 down" : "421 busy", "dest.test");
        }
        Assert.Equal(3, index.TextCount);
        Assert.True(index.TryGetCold(2, out var cold));
        Assert.Equal(("451 down", "dest.test", 1000u), (cold.LastError, cold.LastDestination, cold.Due));
        for (int i = 1; i <= 100; i += 2)
            index.Remove((ulong)i);
        Assert.Equal(2, index.TextCount); // "421 busy" is gone with its last message
        index.Apply(new StatusRecord { Id = 2, TimeUnixMs = 1, NextAttemptUnixMs = 0, Flags = StatusFlags.Held, Attempts = 3, Changes = [] });
        Assert.True(index.TryGetCold(2, out cold));
        Assert.Equal((true, 3, "451 down", 1000u), (cold.Held, cold.Attempts, cold.LastError, cold.Due)); // a status keeps the cold state
        Assert.False(index.IsDue(2, 1000)); // held: its heap entry is stale
        Assert.True(index.IsDue(4, 1000));
        Assert.False(index.TryWarm(4, attempt: true, 999, out _, out _));
        Assert.True(index.TryWarm(4, attempt: true, 1000, out _, out _));
        Assert.False(index.TryWarm(4, attempt: true, 1000, out _, out _)); // taken once
    }
}
