namespace NativeRelay.Api;

/// <summary>
/// Where a one-click unsubscribe goes, and what injection asks before it queues a message: the
/// seam to the suppression list (issue 26's <c>NativeRelay.Traffic.Suppression.ISuppressionList</c>
/// takes this place once it lands; until then <see cref="FileUnsubscribeRecorder"/>).
/// </summary>
public interface IUnsubscribeRecorder
{
    /// <summary>Records (durably) that <paramref name="recipient"/> wants no more mail from <paramref name="senderDomain"/>'s <paramref name="listId"/>.</summary>
    ValueTask RecordAsync(string recipient, string senderDomain, string listId);

    /// <summary>
    /// True when mail from <paramref name="senderDomain"/> in <paramref name="pool"/> (null: no
    /// pool) must not go to the recipient: an unsubscribe from that domain, or (with the
    /// suppression list) any entry whose scope covers the message, global, pool or domain.
    /// </summary>
    bool IsSuppressed(string recipient, string? pool, string senderDomain);
}
