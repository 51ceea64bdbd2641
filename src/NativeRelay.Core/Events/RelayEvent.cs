namespace NativeRelay.Events;

/// <summary>
/// One event as a stage reports it. Everything but the type is optional; an absent field is left
/// out of the JSON (docs/EVENTS.md lists the names). The event id is not here: the journal gives
/// it when the event is made durable (<see cref="EventJournal"/>), so a retried POST, and a
/// duplicate sent again after a crash, carry the same id.
/// </summary>
public sealed class RelayEvent
{
    public required RelayEventType Type { get; init; }

    /// <summary>When it happened, Unix milliseconds (0: now).</summary>
    public long TimeUnixMs { get; init; }

    /// <summary>The queue id of the message (0: none, e.g. a suppression added by hand).</summary>
    public ulong QueueId { get; init; }

    /// <summary>The message's Message-ID field, angle brackets included, as the header has it.</summary>
    public string? MessageId { get; init; }

    /// <summary>The envelope recipient (UTF-8 bytes as received); empty: none.</summary>
    public ReadOnlyMemory<byte> Recipient { get; init; }

    /// <summary>The envelope sender; null: not known. Empty is the null reverse-path (written as "").</summary>
    public byte[]? Sender { get; init; }

    /// <summary>The pool, source and site of the delivery (traffic control; null until a stage gives them).</summary>
    public string? Pool { get; init; }
    public string? Source { get; init; }
    public string? Site { get; init; }

    /// <summary>The SMTP reply of the next hop (or the local one for DNS and connection failures).</summary>
    public string? Reply { get; init; }

    /// <summary>The bounce class of a failure (traffic control's classifier).</summary>
    public string? BounceClass { get; init; }

    /// <summary>The injection's tags (HTTP API).</summary>
    public IReadOnlyList<string>? Tags { get; init; }

    /// <summary>The injection's metadata: one JSON object, UTF-8, copied into the event as it is.</summary>
    public ReadOnlyMemory<byte> Metadata { get; init; }

    /// <summary>The attempt number of a delivery outcome (1 for the first).</summary>
    public int Attempt { get; init; }

    /// <summary>The next hop's host name and address of a delivery outcome.</summary>
    public string? Host { get; init; }
    public string? Ip { get; init; }

    /// <summary>The queue id of the DSN this event is about (dsn_sent) or produced.</summary>
    public ulong DsnQueueId { get; init; }

    /// <summary>admin_action: held, released, flushed, deleted, returned. suppression: why (unsubscribe, bounce, admin, ...).</summary>
    public string? Action { get; init; }

    /// <summary>suppression and unsubscribe: the sender domain and list the entry is for (null: every one).</summary>
    public string? SenderDomain { get; init; }
    public string? ListId { get; init; }

    /// <summary>The pool the sinks' pool filters see: an event without one belongs to "default".</summary>
    public string PoolForFilter => Pool ?? "default";
}
