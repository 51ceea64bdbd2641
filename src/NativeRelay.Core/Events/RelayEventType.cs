namespace NativeRelay.Events;

/// <summary>What happened, as the <c>type</c> of an event (docs/EVENTS.md). The byte value is stored in the event journal: append only, never renumber.</summary>
public enum RelayEventType : byte
{
    /// <summary>A message was accepted and spooled (one event per recipient).</summary>
    Reception = 1,
    /// <summary>The next hop (or local delivery) accepted the recipient.</summary>
    Delivery = 2,
    /// <summary>A delivery attempt failed temporarily; the recipient stays queued.</summary>
    TransientFailure = 3,
    /// <summary>The recipient failed for good (a 5xx reply).</summary>
    Bounce = 4,
    /// <summary>The recipient was still undelivered when its time in the queue ran out.</summary>
    Expiry = 5,
    /// <summary>An address was added to the suppression list.</summary>
    Suppression = 6,
    /// <summary>A recipient unsubscribed (one-click, RFC 8058).</summary>
    Unsubscribe = 7,
    /// <summary>A delivery status notification (RFC 3464) about the message was queued to its sender.</summary>
    DsnSent = 8,
    /// <summary>An administrator held, released, flushed, deleted or returned the message.</summary>
    AdminAction = 9,
}

/// <summary>The JSON names of the event types and the bit each has in a sink's filter.</summary>
public static class RelayEventTypes
{
    private static readonly string[] Names =
        ["", "reception", "delivery", "transient_failure", "bounce", "expiry", "suppression", "unsubscribe", "dsn_sent", "admin_action"];

    /// <summary>Every type name, in order (for docs, errors and completion).</summary>
    public static IEnumerable<string> All => Names.Skip(1);

    public static string Name(RelayEventType type) => (int)type < Names.Length ? Names[(int)type] : "unknown";

    public static bool TryParse(string name, out RelayEventType type)
    {
        int i = Array.IndexOf(Names, name);
        type = (RelayEventType)Math.Max(i, 0);
        return i > 0;
    }

    /// <summary>The filter bit of a type (a sink's accepted types are one int).</summary>
    public static int Bit(RelayEventType type) => 1 << (int)type;

    /// <summary>Every type.</summary>
    public const int AllBits = ~0;
}
