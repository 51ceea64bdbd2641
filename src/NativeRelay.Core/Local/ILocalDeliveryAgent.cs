using NativeRelay.Message;
using NativeRelay.Smtp;
using NativeRelay.Spool;

namespace NativeRelay.Local;

/// <summary>
/// The outcome of local delivery for one envelope recipient, in the terms of a remote reply:
/// 2xx delivered, 4xx try again later, 5xx failed for good. <see cref="Detail"/> says where the
/// message went (or why not) for the delivery log.
/// </summary>
public readonly record struct LocalResult(int RecipientIndex, SmtpReply Reply, string Detail);

/// <summary>
/// Final delivery of a queued message to recipients of local domains. The delivery loop calls it
/// in place of an SMTP transaction for recipients whose domain <see cref="IsLocal"/>, and records
/// the results like remote replies. Thread-safe; one instance serves every loop.
/// </summary>
public interface ILocalDeliveryAgent
{
    /// <summary>Whether mail for this domain (bytes as in the envelope) is delivered here.</summary>
    bool IsLocal(ReadOnlySpan<byte> domain);

    /// <summary>
    /// Delivers <paramref name="body"/> to the envelope recipients at <paramref name="recipientIndexes"/>
    /// (indexes into <see cref="Envelope.Recipients"/>). Returns one result per index, in the same
    /// order. Never throws for a delivery problem: a failure is a 4xx or 5xx result.
    /// </summary>
    Task<LocalResult[]> DeliverAsync(Envelope envelope, MessageBuffer body, IReadOnlyList<int> recipientIndexes, CancellationToken cancel = default);
}

/// <summary>
/// Where an alias pointing outside the local domains sends the message: back into the relay's
/// queue as a new message (the lead's choice of wiring), or through <see cref="SmtpResubmitForwarder"/>.
/// The message given already carries "Delivered-To: &lt;alias&gt;" on top, so a forwarding loop
/// that comes back here is seen and refused.
/// </summary>
public interface ILocalForwarder
{
    Task<SmtpReply> ForwardAsync(ReadOnlyMemory<byte> sender, IReadOnlyList<string> recipients, ReadOnlyMemory<byte> prefix, MessageBuffer body, bool eightBit, CancellationToken cancel);
}
