using NativeRelay.Smtp;

namespace NativeRelay.Delivery;

/// <summary>
/// One attempt at a message (Postfix would say: one pass through the active queue). It starts
/// when the scheduler routes the message and ends when the last of its jobs has reported; then
/// the outcome is settled once for the whole message: one status record, at most one DSN, and
/// one retry time. Touched only under the message's lock.
/// </summary>
internal sealed class DeliveryRound
{
    public DeliveryRound(int recipients)
    {
        Replies = new SmtpReply[recipients];
        RemoteMta = new string?[recipients];
    }

    /// <summary>Jobs still running, plus one for the dispatcher until every job is handed over.</summary>
    public int Outstanding;

    /// <summary>Some recipient got a reply (a real attempt, which counts).</summary>
    public bool Attempted;

    /// <summary>Per envelope recipient: this attempt's reply (code 0: not attempted).</summary>
    public readonly SmtpReply[] Replies;

    /// <summary>Per envelope recipient: the host that gave the reply (null: made up locally).</summary>
    public readonly string?[] RemoteMta;

    /// <summary>Per envelope recipient: the DSN request went on to the next hop, which now answers for it.</summary>
    public bool[]? DsnPassed;

    public long StartedUnixMs;
}
