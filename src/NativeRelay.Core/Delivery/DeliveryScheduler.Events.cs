using NativeRelay.Events;
using NativeRelay.Smtp;

namespace NativeRelay.Delivery;

/// <summary>
/// What the delivery side reports to the events stage: each recipient's outcome, expiry, the DSNs
/// sent and the administrators' actions. Every event is published before the status record that
/// settles what it describes, and <see cref="AppendStatusAsync"/> awaits the event journal first,
/// so a recorded outcome always has its event durable (a crash in between repeats the attempt,
/// and its event, rather than losing the event). With events off every method returns at once.
/// </summary>
public sealed partial class DeliveryScheduler
{
    private IEventPublisher _events = NullEventPublisher.Instance;

    /// <summary>Where events go; set before <see cref="Start"/> (the null publisher by default).</summary>
    public IEventPublisher Events
    {
        get => _events;
        set => _events = value ?? NullEventPublisher.Instance;
    }

    private void PublishOutcome(QueuedMessage message, int i, SmtpReply reply, int attempt, AttemptInfo? info, string? bounceClass)
    {
        if (!_events.IsEnabled)
            return;
        var envelope = message.Envelope;
        var facts = InjectionFacts.Of(envelope);
        _events.Publish(new RelayEvent
        {
            Type = reply.IsPositive ? RelayEventType.Delivery : reply.IsPermanent ? RelayEventType.Bounce : RelayEventType.TransientFailure,
            QueueId = message.Id,
            MessageId = MessageIdOf(message),
            Recipient = envelope.Recipients[i],
            Sender = envelope.Sender,
            Reply = reply.ToString(),
            Attempt = attempt,
            Host = info?.Host,
            Ip = string.IsNullOrEmpty(info?.Ip) ? null : info.Ip,
            Pool = envelope.Pool ?? facts.Pool,
            Tags = facts.Tags,
            Metadata = facts.Metadata,
            BounceClass = bounceClass,
            Source = info?.Source,
            Site = info?.Site,
        });
    }

    /// <summary>Expiry per recipient and the DSN (if one was queued), before the round's status record.</summary>
    private void PublishRoundEnd(QueuedMessage message, RoundOutcome outcome, ulong dsnId)
    {
        if (!_events.IsEnabled)
            return;
        var envelope = message.Envelope;
        string? messageId = MessageIdOf(message);
        if (outcome.Expired is not null)
        {
            var facts = InjectionFacts.Of(envelope);
            foreach (int i in outcome.Expired)
            {
                var last = outcome.Round.Replies[i];
                _events.Publish(new RelayEvent
                {
                    Type = RelayEventType.Expiry, QueueId = message.Id, MessageId = messageId, Recipient = envelope.Recipients[i],
                    Sender = envelope.Sender, Attempt = outcome.Attempts, Reply = last.Code == 0 ? null : last.ToString(),
                    Pool = envelope.Pool ?? facts.Pool, Tags = facts.Tags, Metadata = facts.Metadata,
                });
            }
        }
        if (dsnId != 0)
            PublishDsnSent(message, dsnId);
    }

    /// <summary>A DSN about the message was queued to its sender (one event per DSN; its queue id in dsn_queue_id).</summary>
    private void PublishDsnSent(QueuedMessage message, ulong dsnId)
    {
        if (!_events.IsEnabled || dsnId == 0)
            return;
        message.TryGetEnvelope(out var envelope);
        var facts = InjectionFacts.Of(envelope);
        _events.Publish(new RelayEvent
        {
            Type = RelayEventType.DsnSent, QueueId = message.Id, MessageId = MessageIdOf(message), Sender = envelope?.Sender,
            DsnQueueId = dsnId, Attempt = message.Attempts, Pool = envelope?.Pool ?? facts.Pool, Tags = facts.Tags, Metadata = facts.Metadata,
        });
    }

    /// <summary>An administrator's action on a message (held, released, flushed, deleted; returned per recipient, with its DSN).</summary>
    private void PublishAdmin(string action, QueuedMessage message, int recipient = -1, string? reply = null, ulong dsnId = 0)
    {
        if (!_events.IsEnabled)
            return;
        message.TryGetEnvelope(out var envelope);
        var facts = InjectionFacts.Of(envelope);
        _events.Publish(new RelayEvent
        {
            Type = RelayEventType.AdminAction,
            Pool = envelope?.Pool ?? facts.Pool,
            Tags = facts.Tags,
            Metadata = facts.Metadata,
            Action = action,
            QueueId = message.Id,
            MessageId = MessageIdOf(message),
            Recipient = recipient >= 0 && envelope is not null ? envelope.Recipients[recipient] : default,
            Sender = envelope?.Sender,
            Reply = reply,
            DsnQueueId = dsnId,
            Attempt = message.Attempts,
        });
    }

    /// <summary>The message's Message-ID, read once from its bytes while they are in memory; null when they are not (a cold message).</summary>
    private static string? MessageIdOf(QueuedMessage message)
    {
        var known = message.MessageIdField;
        if (known is not null)
            return known.Length == 0 ? null : known;
        NativeRelay.Message.MessageBuffer? body;
        lock (message)
            body = message.Body?.AddReference();
        if (body is null)
            return null;
        try
        {
            var found = MessageIdHeader.Find(body.FirstBlockContent());
            message.MessageIdField = found ?? "";
            return found;
        }
        finally
        {
            body.Release();
        }
    }
}
