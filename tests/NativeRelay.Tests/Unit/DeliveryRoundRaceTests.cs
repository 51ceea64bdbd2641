using NativeRelay.Delivery;
using NativeRelay.Spool;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// A round of a message with several jobs (here recipients at two destinations), in the order the
/// soak hit a few times an hour: one job has recorded its results but not yet logged them when
/// the round's other job reports last and ends the round, which sends the message back to cold
/// (its envelope dropped). Before 527af91 the first job had already left the round at that point;
/// its logging then threw ("the envelope is not loaded"), its deliveries were never recorded, and
/// the next attempt sent them again. The scheduler's test seam
/// (<see cref="DeliveryScheduler.AfterJobResultsRecorded"/>) holds the first job exactly there, so
/// every run takes that path. Real spool, scheduler, loops and SMTP client; peers on loopback.
/// </summary>
public sealed class DeliveryRoundRaceTests
{
    private const int First = 0;  // a@dest.test, delivered by Peers[0]
    private const int Second = 1; // b@origin.test, deferred by Peers[1] in the first round

    [Fact]
    public async Task A_job_still_logging_when_another_ends_the_round_has_its_delivery_recorded_and_sent_once()
    {
        // Retries are far off: only the restart below tries the message again.
        await using var world = await DeliveryWorld.StartAsync(o => o.Delivery.RetryInitialSeconds = o.Delivery.RetryMaxSeconds = 600);
        var envelope = DeliveryWorld.Envelope("alice@origin.test", ["a@dest.test", "b@origin.test"]);

        var firstHeld = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var firstReleased = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int secondReported = 0;
        world.Scheduler.AfterJobResultsRecorded = async job =>
        {
            if (!job.Message.TryGetEnvelope(out var e) || !ReferenceEquals(e, envelope) || job.Recipients is not [var only])
                return;
            if (only == Second)
            {
                Volatile.Write(ref secondReported, 1);
                return;
            }
            Assert.Equal(First, only);
            firstHeld.TrySetResult();
            // Held until the other job has reported: either only this job is left in the round
            // (it leaves after its logging, and so ends the round itself), or that job ended the
            // round and the message is cold again.
            var message = job.Message;
            await Waits.UntilAsync(() => Volatile.Read(ref secondReported) == 1 && OnlyOneJobLeftOrCold(message), Waits.Delivery,
                "the second job has reported");
            firstReleased.TrySetResult();
        };
        // The second job reports only once the first is held: it is the round's last to report.
        int secondDataReplies = 0;
        world.Peers[1].DataReply = m =>
        {
            if (!m.Recipients.Contains("b@origin.test") || Interlocked.Increment(ref secondDataReplies) > 1)
                return "250 2.0.0 Ok: queued";
            firstHeld.Task.Wait(Waits.Delivery);
            return "451 4.3.0 try again later";
        };

        var message = await world.QueueAsync(envelope, MessageText.Simple("round-race@test"));
        await firstReleased.Task.WaitAsync(Waits.Delivery);
        await world.WaitUntilAsync(() => message.Round is null && !message.HasEnvelope, "the first round is over (the message is cold)");

        // What the spool holds is what a restart (or the retry) goes by.
        await world.RestartAsync();
        var recovered = Assert.Single(world.Recovered, r => r.Id == message.Id).Recipients.ToArray();
        await world.WaitUntilGoneAsync(message);

        int firstSent = world.Peers[0].Messages.Count(m => m.Recipients.Contains("a@dest.test"));
        int secondSent = world.Peers[1].Messages.Count(m => m.Recipients.Contains("b@origin.test"));
        string errors = world.LoggedErrors;
        // Each failure says all that happened: the sends, what the spool had, what went wrong.
        string what = $"a@dest.test accepted {firstSent}x, b@origin.test {secondSent}x; recovered [{string.Join(", ", recovered)}]; errors logged: {(errors.Length == 0 ? "none" : errors)}";
        Assert.True(firstSent == 1, what);
        Assert.True(secondSent == 1, what);
        Assert.True(recovered is [RecipientState.Delivered, RecipientState.Pending], what);
        Assert.True(errors.Length == 0, what);
    }

    private static bool OnlyOneJobLeftOrCold(QueuedMessage message)
    {
        lock (message)
            if (message.Round is { } round)
                return round.Outstanding == 1;
        return !message.HasEnvelope;
    }
}
