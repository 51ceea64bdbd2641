using System.Text;
using NativeRelay.Traffic.Suppression;

namespace NativeRelay.Api;

/// <summary>
/// One-click unsubscribes into the relay's suppression list (RFC 8058): the recipient is
/// suppressed for the sender's domain (scope <c>domain:SENDERDOMAIN</c>), durably before the
/// 200, so the SMTP side refuses it at RCPT and the API rejects it, like any suppressed address.
/// </summary>
public sealed class SuppressionUnsubscribeRecorder(ISuppressionList list) : IUnsubscribeRecorder
{
    public ValueTask RecordAsync(string recipient, string senderDomain, string listId) =>
        // The journal's fsync is a blocking call: off Kestrel's request thread.
        new(Task.Run(() =>
        {
            list.Add(Encoding.UTF8.GetBytes(recipient), SuppressionScope.Domain(senderDomain),
                listId.Length == 0 ? "unsubscribe (one-click)" : $"unsubscribe (one-click, list {listId})");
            list.Commit();
        }));

    public bool IsSuppressed(string recipient, string? pool, string senderDomain) =>
        list.IsSuppressed(Encoding.UTF8.GetBytes(recipient), pool, Encoding.UTF8.GetBytes(senderDomain));
}
