using NativeRelay.Config;
using NativeRelay.Delivery;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// Inflow control (delivery.inFlowBacklog, delivery.inFlowDelaySeconds): a receiver pauses while
/// more new mail waits for its first attempt than the limit, until the backlog is back within it
/// or the longest pause is up, and never refuses.
/// </summary>
public sealed class InFlowGateTests
{
    private const string Sender = "alice@origin.test";

    [Fact]
    public void Within_the_limit_a_receiver_goes_on_at_once()
    {
        int backlog = 3;
        var gate = new InFlowGate(() => backlog, limit: 3, maxPauseSeconds: 60);
        Assert.True(gate.WaitForRoomAsync().IsCompletedSuccessfully);
    }

    [Fact]
    public void A_delay_of_zero_turns_the_gate_off_whatever_the_backlog()
    {
        var gate = new InFlowGate(() => 1_000_000, limit: 1, maxPauseSeconds: 0);
        Assert.True(gate.WaitForRoomAsync().IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Over_the_limit_a_receiver_waits_until_the_backlog_is_back_within_it()
    {
        int backlog = 5;
        var gate = new InFlowGate(() => Volatile.Read(ref backlog), limit: 3, maxPauseSeconds: 60);
        long pausesBefore = RelayMetrics.InFlowPauses.Value;
        var first = gate.WaitForRoomAsync().AsTask();
        var second = gate.WaitForRoomAsync().AsTask();
        Assert.False(first.IsCompleted);

        // A first attempt ends but the backlog is still over the limit: nobody goes on.
        Volatile.Write(ref backlog, 4);
        gate.BacklogShrank();
        await Task.Delay(50);
        Assert.False(first.IsCompleted);
        Assert.False(second.IsCompleted);

        // Back within it: every paused receiver goes on, long before the 60 s pause is up.
        Volatile.Write(ref backlog, 3);
        gate.BacklogShrank();
        await Task.WhenAll(first, second).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(RelayMetrics.InFlowPauses.Value >= pausesBefore + 2);
    }

    [Fact]
    public async Task A_backlog_that_does_not_shrink_holds_a_receiver_only_for_the_longest_pause()
    {
        var gate = new InFlowGate(() => 10, limit: 1, maxPauseSeconds: 0.05);
        // Never refused: the pause ends and the message is taken (no exception).
        await gate.WaitForRoomAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task A_reload_that_widens_the_limit_or_turns_the_gate_off_releases_who_waits()
    {
        var gate = new InFlowGate(() => 10, limit: 1, maxPauseSeconds: 60);
        var waiting = gate.WaitForRoomAsync().AsTask();
        Assert.False(waiting.IsCompleted);
        gate.Reconfigure(limit: 100, maxPauseSeconds: 60);
        await waiting.WaitAsync(TimeSpan.FromSeconds(30));

        var again = new InFlowGate(() => 10, limit: 1, maxPauseSeconds: 60);
        var waitingAgain = again.WaitForRoomAsync().AsTask();
        again.Reconfigure(limit: 1, maxPauseSeconds: 0);
        await waitingAgain.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(again.WaitForRoomAsync().IsCompletedSuccessfully);
    }

    [Theory]
    [InlineData(0, 1.0, "delivery.inFlowBacklog")]
    [InlineData(256, -1.0, "delivery.inFlowDelaySeconds")]
    [InlineData(256, 61.0, "delivery.inFlowDelaySeconds")]
    public void Out_of_range_settings_are_refused_with_their_name(int backlog, double delay, string name)
    {
        var options = new RelayOptions();
        options.Delivery.InFlowBacklog = backlog;
        options.Delivery.InFlowDelaySeconds = delay;
        var e = Assert.Throws<ConfigException>(() => RelaySettings.Validate(options));
        Assert.Contains(name, e.Message);
    }

    [Fact]
    public async Task The_scheduler_holds_receivers_while_new_mail_waits_on_a_slow_next_hop_and_lets_them_go_as_it_is_delivered()
    {
        await using var world = await DeliveryWorld.StartAsync(o =>
        {
            o.Delivery.InFlowBacklog = 2;
            o.Delivery.InFlowDelaySeconds = 60;
        });
        using var release = new ManualResetEventSlim();
        world.Peers[0].DataReply = _ => release.Wait(TimeSpan.FromSeconds(60)) ? "250 2.0.0 Ok" : "451 4.3.0 test gave up";
        try
        {
            var queued = new List<QueuedMessage>();
            for (int i = 0; i < 3; i++)
                queued.Add(await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["r@dest.test"]), MessageText.Simple($"flow{i}@test")));
            Assert.True(world.Scheduler.ActiveCount >= 3);

            // Three new messages wait on the next hop, over the limit of 2: the next receiver waits.
            var pause = world.Scheduler.WaitForInFlowRoomAsync().AsTask();
            await Task.Delay(200);
            Assert.False(pause.IsCompleted, "a receiver went on while the backlog was over the limit");

            // The next hop answers: the first attempts end, and the receiver goes on well before its 60 s.
            release.Set();
            await pause.WaitAsync(TimeSpan.FromSeconds(30));
            foreach (var m in queued)
                await world.WaitUntilGoneAsync(m);
            Assert.True(world.Scheduler.WaitForInFlowRoomAsync().IsCompletedSuccessfully);
        }
        finally
        {
            release.Set();
        }
    }

    [Fact]
    public async Task Deferred_mail_leaves_the_backlog_so_a_next_hop_that_is_down_holds_no_sender_back()
    {
        await using var world = await DeliveryWorld.StartAsync(o =>
        {
            o.Delivery.InFlowBacklog = 2;
            o.Delivery.InFlowDelaySeconds = 60;
            o.Delivery.RetryInitialSeconds = 3600;
            o.Delivery.RetryMaxSeconds = 3600;
        });
        world.Peers[0].DataReply = _ => "451 4.3.0 not now";
        var queued = new List<QueuedMessage>();
        for (int i = 0; i < 5; i++)
            queued.Add(await world.QueueAsync(DeliveryWorld.Envelope(Sender, ["r@dest.test"]), MessageText.Simple($"down{i}@test")));
        await world.WaitUntilAsync(() => queued.All(m => world.Scheduler.Show(m.IdText) is { Attempts: >= 1, NextAttempt: not null })
                                         && world.Scheduler.ActiveCount == 0, "5 messages deferred and cold");
        Assert.True(world.Scheduler.WaitForInFlowRoomAsync().IsCompletedSuccessfully);
    }
}
