namespace NativeRelay.Spool;

[Flags]
public enum EnvelopeFlags : uint
{
    None = 0,
    /// <summary>MAIL ... BODY=8BITMIME (RFC 6152).</summary>
    EightBitMime = 1,
    /// <summary>MAIL ... SMTPUTF8 (RFC 6531).</summary>
    SmtpUtf8 = 2,
}

/// <summary>
/// The SMTP envelope of a queued message: who sent it, to whom, and from where. Addresses stay
/// bytes (as received), since they are only ever written back onto the wire.
/// </summary>
public sealed class Envelope
{
    /// <summary>The reverse-path without angle brackets; empty for the null sender (&lt;&gt;).</summary>
    public required byte[] Sender { get; init; }
    public required byte[][] Recipients { get; init; }
    public required string ClientAddress { get; init; }
    public required string HeloName { get; init; }
    public required long ArrivalUnixMs { get; init; }
    public EnvelopeFlags Flags { get; init; }

    public string SenderText => Sender.Length == 0 ? "<>" : System.Text.Encoding.UTF8.GetString(Sender);
    public string RecipientText(int i) => System.Text.Encoding.UTF8.GetString(Recipients[i]);
}
