namespace NativeRelay.Delivery;

/// <summary>One queued message as an operator sees it (queue list / queue show).</summary>
public sealed record QueueEntry(
    string Id,
    DateTimeOffset Arrival,
    long Size,
    string Sender,
    IReadOnlyList<string> PendingRecipients,
    DateTimeOffset? NextAttempt,
    int Attempts,
    string? LastError,
    bool Held);

/// <summary>Which messages an admin command applies to: one id, or every message with a recipient in a domain.</summary>
public sealed record QueueSelector(string? Id, string? Domain)
{
    public static QueueSelector ForId(string id) => new(id, null);
    public static QueueSelector ForDomain(string domain) => new(null, domain);
}

/// <summary>Counts for queue stats.</summary>
public sealed record QueueStats(int Active, int Deferred, int Held, IReadOnlyDictionary<string, int> ByDestination);

/// <summary>
/// The queue operations behind <c>nativerelay queue ...</c>. The delivery side implements it; the
/// control socket calls it. Every mutating operation returns how many messages it touched, and
/// every one of them is made durable with a status record before it returns, so an admin action
/// survives a crash like a delivery does.
/// </summary>
public interface IQueueAdmin
{
    IReadOnlyList<QueueEntry> List(string? domain, TimeSpan? olderThan);
    QueueEntry? Show(string id);
    Task<int> FlushAsync(QueueSelector selector);
    Task<int> DeleteAsync(QueueSelector selector);
    Task<int> BounceAsync(QueueSelector selector);
    Task<int> HoldAsync(QueueSelector selector);
    Task<int> ReleaseAsync(QueueSelector selector);
    QueueStats Stats();
}
