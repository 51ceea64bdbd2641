namespace NativeRelay.Traffic.Suppression;

/// <summary>What the relay says about a suppressed recipient, at RCPT and to the sender of mail already queued.</summary>
public static class SuppressionReplies
{
    /// <summary>The RCPT reply: 550 5.7.1 (delivery not authorized), as issue 26 fixes it.</summary>
    public static ReadOnlySpan<byte> Refused => "550 5.7.1 Recipient address rejected: the address is on this relay's suppression list\r\n"u8;

    /// <summary>The reply a queued recipient fails with (in the delivery log and the DSN).</summary>
    public const string QueuedText = "5.7.1 the recipient is on this relay's suppression list; the message was not sent to it";
}
