using NativeRelay.Spool;

namespace NativeRelay.Events;

/// <summary>
/// Events other stages report, as calls on <see cref="IEventPublisher"/> (each returns at once
/// when events are off): reception (SMTP sessions, the HTTP injection), suppression (traffic
/// control) and unsubscribe (the HTTP API).
/// </summary>
public static class MessageEvents
{
    /// <summary>An address was added to the suppression list, for a sender domain or list (null: every one); <paramref name="reason"/> goes into <c>action</c>.</summary>
    public static void PublishSuppression(this IEventPublisher events, ReadOnlyMemory<byte> recipient, string? senderDomain, string? listId,
        string reason, string? pool = null)
    {
        if (!events.IsEnabled)
            return;
        events.Publish(new RelayEvent
        {
            Type = RelayEventType.Suppression, Recipient = recipient, SenderDomain = senderDomain, ListId = listId, Action = reason, Pool = pool,
        });
    }

    /// <summary>A recipient unsubscribed (one-click, RFC 8058): the message the link came with, when known, in <paramref name="queueId"/>.</summary>
    public static void PublishUnsubscribe(this IEventPublisher events, ReadOnlyMemory<byte> recipient, string? senderDomain, string? listId,
        ulong queueId = 0, string? pool = null)
    {
        if (!events.IsEnabled)
            return;
        events.Publish(new RelayEvent
        {
            Type = RelayEventType.Unsubscribe, Recipient = recipient, SenderDomain = senderDomain, ListId = listId, QueueId = queueId, Pool = pool,
        });
    }

    /// <summary>
    /// One reception event per recipient of a spooled message. <paramref name="headerSection"/> is
    /// the start of the message as spooled (trace fields included), read for its Message-ID.
    /// </summary>
    public static void PublishReception(this IEventPublisher events, ulong queueId, Envelope envelope, ReadOnlySpan<byte> headerSection,
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
