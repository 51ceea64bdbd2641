using NativeRelay.Spool;

namespace NativeRelay.Events;

/// <summary>The events of a message's own life that the receiving side reports (the HTTP injection uses them too).</summary>
public static class MessageEvents
{
    /// <summary>
    /// One reception event per recipient of a spooled message. <paramref name="headerSection"/> is
    /// the start of the message as spooled (trace fields included), read for its Message-ID.
    /// </summary>
    public static void PublishReception(IEventPublisher events, ulong queueId, Envelope envelope, ReadOnlySpan<byte> headerSection,
        IReadOnlyList<string>? tags = null, ReadOnlyMemory<byte> metadata = default, string? pool = null)
    {
        if (!events.IsEnabled)
            return;
        string? messageId = MessageIdHeader.Find(headerSection);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        for (int i = 0; i < envelope.Recipients.Length; i++)
        {
            events.Publish(new RelayEvent
            {
                Type = RelayEventType.Reception,
                TimeUnixMs = now,
                QueueId = queueId,
                MessageId = messageId,
                Recipient = envelope.Recipients[i],
                Sender = envelope.Sender,
                Pool = pool,
                Tags = tags,
                Metadata = metadata,
            });
        }
    }
}
