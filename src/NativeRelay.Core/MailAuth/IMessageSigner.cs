using NativeRelay.Message;

namespace NativeRelay.MailAuth;

/// <summary>
/// The receiving session's one way into signing: called once per accepted message, after the
/// trace headers are written and before the spool append, so the signature is stored with the
/// message (a recovered message is delivered with the same signature). A relay without keys has
/// no signer, and the session skips the call.
/// </summary>
public interface IMessageSigner
{
    /// <summary>Room the signature header(s) may need in the message buffer's reserved front.</summary>
    int MaxHeaderLength { get; }

    /// <summary>
    /// Adds the signature header(s) above the message, or leaves it unsigned when no key applies.
    /// Returns the buffer to spool: <paramref name="message"/> itself, or (rarely, when the headers
    /// did not fit the reserved front) a copy with room for them, in which case
    /// <paramref name="message"/> has been released.
    /// </summary>
    ValueTask<MessageBuffer> SignAsync(MessageBuffer message, byte[] envelopeSender, string? authenticatedUser);
}
