namespace NativeRelay.Traffic.Suppression;

/// <summary>
/// The suppression list as the rest of the relay sees it: the RCPT check, the delivery side's
/// automatic additions, the control socket, and later the HTTP unsubscribe and the fleet's shared
/// list. Addresses are compared without regard to ASCII case.
/// </summary>
public interface ISuppressionList
{
    /// <summary>
    /// Whether mail to <paramref name="recipient"/> is suppressed: globally, for the message's
    /// <paramref name="pool"/> (null: none), or for the sender's domain (empty: none). On the RCPT
    /// hot path: a keyed hash and one probe sequence per scope in use, no allocation.
    /// </summary>
    bool IsSuppressed(ReadOnlySpan<byte> recipient, string? pool, ReadOnlySpan<byte> senderDomain);

    /// <summary>Adds an entry (nothing happens when it is there already). Durable after <see cref="Commit"/>.</summary>
    void Add(ReadOnlySpan<byte> recipient, SuppressionScope scope, string reason);

    /// <summary>Removes an entry; false when there was none. Durable after <see cref="Commit"/>.</summary>
    bool Remove(ReadOnlySpan<byte> recipient, SuppressionScope scope);

    /// <summary>Makes every change made so far durable (fsync); callers that answer someone call it before they answer.</summary>
    void Commit();

    /// <summary>Entries in the list.</summary>
    int Count { get; }
}
