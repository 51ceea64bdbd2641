using NativeRelay.Delivery;
using NativeRelay.Message;

namespace NativeRelay.Spool;

/// <summary>
/// Accepting a message, the one way in for every receiver (the SMTP session, the HTTP API):
/// append it to the spool under a truncation reservation, wait for the group commit that makes it
/// durable, and only then acknowledge it and hand it to delivery. Between <see cref="AppendAsync"/>
/// and <see cref="HandOverAsync"/> (or <see cref="Abandon"/>) the log is not truncated under it.
/// Several appends may share one commit: a caller that appends many messages waits once, for the
/// highest head address (<see cref="WaitForCommitAsync"/>).
/// </summary>
public sealed class SpoolIntake(SpoolLog spool, IQueueIntake queue)
{
    public SpoolLog Spool => spool;

    /// <summary>
    /// Where reception events go: published at the append, made durable beside the spool's
    /// commit (<see cref="WaitForCommitAsync"/> waits for both), so no message is acknowledged
    /// without its reception event on disk, whichever receiver took it.
    /// </summary>
    public Events.IEventPublisher Events { get; set; } = NativeRelay.Events.NullEventPublisher.Instance;

    /// <summary>Appends the message (not yet durable). On failure the reservation is given back and the exception thrown.</summary>
    /// <exception cref="SpoolFullException">Taking it would leave the disk too full.</exception>
    public async ValueTask<SpooledMessage> AppendAsync(ulong id, Envelope envelope, MessageBuffer body)
    {
        // Inflow control: a sender that outruns delivery waits here, before its mail is taken.
        await queue.WaitForInFlowRoomAsync().ConfigureAwait(false);
        queue.ReserveSpool(id);
        try
        {
            var (head, first) = await spool.AppendMessageAsync(id, envelope, body).ConfigureAwait(false);
            if (Events.IsEnabled)
            {
                var facts = NativeRelay.Events.InjectionFacts.Of(envelope);
                NativeRelay.Events.MessageEvents.PublishReception(Events, id, envelope, body.FirstBlockContent(), facts.Tags, facts.Metadata, envelope.Pool ?? facts.Pool);
            }
            return new SpooledMessage(id, head, first, envelope, body);
        }
        catch
        {
            queue.CancelReservation(id);
            throw;
        }
    }

    /// <summary>Completes when every record up to <paramref name="head"/> is committed (durable).</summary>
    public Task WaitForCommitAsync(long head) =>
        Events.IsEnabled ? BothDurableAsync(Events.DurableAsync(), spool.WaitForCommitAsync(head)) : spool.WaitForCommitAsync(head);

    // The event journal's group commit runs while the spool's does; the acknowledgement waits for both.
    private static async Task BothDurableAsync(Task events, Task spooled)
    {
        await spooled.ConfigureAwait(false);
        await events.ConfigureAwait(false);
    }

    /// <summary>A message appended but not acknowledged (its commit failed): no longer reserved.</summary>
    public void Abandon(in SpooledMessage message) => queue.CancelReservation(message.Id);

    /// <summary>A committed message to delivery; the body's reference moves to the queue.</summary>
    public ValueTask HandOverAsync(in SpooledMessage message, bool held = false) => queue.EnqueueAsync(new QueuedMessage
    {
        Id = message.Id,
        HeadAddress = message.Head,
        FirstAddress = message.First,
        Envelope = message.Envelope,
        Recipients = new RecipientState[message.Envelope.Recipients.Length],
        Body = message.Body,
        Held = held,
    });
}

/// <summary>A message appended to the spool: where its records are, and what delivery gets.</summary>
public readonly record struct SpooledMessage(ulong Id, long Head, long First, Envelope Envelope, MessageBuffer Body);
