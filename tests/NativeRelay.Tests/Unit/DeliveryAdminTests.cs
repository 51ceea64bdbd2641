using NativeRelay.Delivery;
using NativeRelay.Spool;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// Queue administration on the delivery side (<see cref="IQueueAdmin"/>): each operation acts on
/// the live queue and is durable (checked by closing the spool and recovering it).
/// </summary>
public sealed class DeliveryAdminTests
{
    private const string Sender = "alice@origin.test";

    private static async Task<(DeliveryWorld World, QueuedMessage Message)> DeferredMessageAsync(int retrySeconds = 3600)
    {
        var world = await DeliveryWorld.StartAsync(o =>
        {
            o.Delivery.RetryInitialSeconds = retrySeconds;
            o.Delivery.RetryMaxSeconds = retrySeconds;
        });
        world.Peers[0].DataReply = _ => "451 4.3.0 not now";
        var message = await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["r@dest.test", "s@dest.test"]), MessageText.Simple("admin@test"));
        await world.WaitUntilAsync(() => world.Scheduler.Show(message.IdText) is { Attempts: 1, NextAttempt: not null }, "the first attempt deferred");
        return (world, message);
    }

    [Fact]
    public async Task List_show_and_stats_describe_the_queue()
    {
        var (world, message) = await DeferredMessageAsync();
        await using var _ = world;

        var entry = Assert.Single(world.Scheduler.List(null, null));
        Assert.Equal(message.IdText, entry.Id);
        Assert.Equal(Sender, entry.Sender);
        Assert.Equal(["r@dest.test", "s@dest.test"], entry.PendingRecipients);
        Assert.Equal(1, entry.Attempts);
        Assert.Contains("451 4.3.0 not now", entry.LastError);
        Assert.True(entry.NextAttempt > DateTimeOffset.UtcNow.AddMinutes(30));
        Assert.True(entry.Size > 100);
        Assert.False(entry.Held);
        Assert.Single(world.Scheduler.List("dest.test", null));
        Assert.Empty(world.Scheduler.List("other.test", null));
        Assert.Empty(world.Scheduler.List(null, TimeSpan.FromHours(1)));
        Assert.Equal(entry.Id, world.Scheduler.Show(message.IdText)?.Id);
        Assert.Null(world.Scheduler.Show("0000000000000001"));
        var stats = world.Scheduler.Stats();
        Assert.Equal((0, 1, 0), (stats.Active, stats.Deferred, stats.Held));
        Assert.Equal(1, Assert.Single(stats.ByDestination).Value);
    }

    [Fact]
    public async Task Flush_attempts_a_deferred_message_now()
    {
        var (world, message) = await DeferredMessageAsync();
        await using var _ = world;
        world.Peers[0].DataReply = null;

        Assert.Equal(1, await world.Scheduler.FlushAsync(QueueSelector.ForDomain("dest.test")));

        await world.WaitUntilGoneAsync(message);
        Assert.Single(world.Peers[0].Messages);
    }

    [Fact]
    public async Task Hold_keeps_a_message_back_across_a_restart_until_release()
    {
        var (world, message) = await DeferredMessageAsync(retrySeconds: 1);
        await using var _ = world;
        world.Peers[0].DataReply = null;

        Assert.Equal(1, await world.Scheduler.HoldAsync(QueueSelector.ForId(message.IdText)));
        Assert.Equal(0, await world.Scheduler.HoldAsync(QueueSelector.ForId(message.IdText))); // already held
        Assert.True(world.Scheduler.Show(message.IdText)!.Held);
        Assert.Equal(1, world.Scheduler.Stats().Held);
        // Past several retry intervals: nothing is attempted while held.
        await world.Peers[0].AssertStaysTrueAsync(() => world.Peers[0].DataAttemptCount == 1, TimeSpan.FromSeconds(3), "no attempt while held");

        await world.RestartAsync();
        var recovered = Assert.Single(world.Recovered);
        Assert.True(recovered.Held);
        await world.Peers[0].AssertStaysTrueAsync(() => world.Peers[0].DataAttemptCount == 1, TimeSpan.FromSeconds(2), "no attempt after the restart");

        Assert.Equal(1, await world.Scheduler.ReleaseAsync(QueueSelector.ForId(message.IdText)));
        await world.Peers[0].WaitUntilAsync(() => world.Peers[0].Messages.Count == 1, Waits.Delivery, "the released message");
        await world.RestartAsync();
        Assert.Empty(world.Recovered);
    }

    [Fact]
    public async Task Delete_removes_a_message_for_good_without_a_notice()
    {
        var (world, message) = await DeferredMessageAsync();
        await using var _ = world;

        Assert.Equal(1, await world.Scheduler.DeleteAsync(QueueSelector.ForId(message.IdText.ToLowerInvariant())));

        Assert.Null(world.Scheduler.Show(message.IdText));
        Assert.Equal(0, world.Scheduler.LiveCount);
        await world.RestartAsync();
        Assert.Empty(world.Recovered);
        Assert.Equal(0, world.Peers[1].ConnectionCount);
    }

    [Fact]
    public async Task Bounce_returns_a_message_to_its_sender_with_one_dsn()
    {
        var (world, message) = await DeferredMessageAsync();
        await using var _ = world;

        Assert.Equal(1, await world.Scheduler.BounceAsync(QueueSelector.ForId(message.IdText)));

        Assert.Null(world.Scheduler.Show(message.IdText));
        var bounce = await world.Peers[1].WaitForMessageAsync(m => m.MailFrom == "", "the notification");
        var dsn = DsnMessage.Parse(bounce.Data);
        Assert.Equal(2, dsn.PerRecipient.Count);
        Assert.Equal("failed", dsn.Recipient("r@dest.test")["action"]);
        Assert.Contains("administrator", dsn.Recipient("s@dest.test")["diagnostic-code"]);
        await world.RestartAsync();
        // Only the bounce itself may still be queued (it was delivered already, so not even that).
        Assert.DoesNotContain(world.Recovered, r => r.Id == message.Id);
    }
}
