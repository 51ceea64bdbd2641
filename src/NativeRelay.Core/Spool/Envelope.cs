namespace NativeRelay.Spool;

[Flags]
public enum EnvelopeFlags : uint
{
    None = 0,
    /// <summary>MAIL ... BODY=8BITMIME (RFC 6152).</summary>
    EightBitMime = 1,
    /// <summary>MAIL ... SMTPUTF8 (RFC 6531).</summary>
    SmtpUtf8 = 2,
    /// <summary>MAIL ... RET=HDRS (RFC 3461 4.3): a bounce returns only the headers.</summary>
    ReturnHeadersOnly = 4,
    /// <summary>MAIL ... RET=FULL (RFC 3461 4.3): a bounce returns the whole message.</summary>
    ReturnFull = 8,
    /// <summary>Received over an authenticated submission session (RFC 4954).</summary>
    Authenticated = 16,
    /// <summary>This message is itself a bounce (DSN) made by this relay; it never causes another.</summary>
    IsBounce = 32,
    /// <summary>MAIL ... REQUIRETLS (RFC 8689): relayed only over verified TLS to a next hop that offers REQUIRETLS, else bounced.</summary>
    RequireTls = 64,
    /// <summary>
    /// The message carries "TLS-Required: No" and no REQUIRETLS (RFC 8689 5): delivered with
    /// opportunistic TLS whatever verify, DANE or MTA-STS would require.
    /// </summary>
    TlsOptional = 128,
}

/// <summary>RCPT ... NOTIFY= (RFC 3461 4.1). None means the client gave no NOTIFY (default: FAILURE).</summary>
[Flags]
public enum DsnNotify : byte
{
    None = 0,
    Never = 1,
    Success = 2,
    Failure = 4,
    Delay = 8,
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

    /// <summary>Per recipient NOTIFY (RFC 3461); null when no recipient had one.</summary>
    public DsnNotify[]? Notify { get; init; }

    /// <summary>Per recipient ORCPT as given ("rfc822;user@example.com", xtext decoded); null when none had one.</summary>
    public byte[]?[]? OriginalRecipients { get; init; }

    /// <summary>MAIL ... ENVID (RFC 3461 4.4), xtext decoded; null when absent.</summary>
    public byte[]? EnvelopeId { get; init; }

    /// <summary>The authenticated user (submission), or null.</summary>
    public string? AuthenticatedUser { get; init; }
    public required string ClientAddress { get; init; }
    public required string HeloName { get; init; }
    public required long ArrivalUnixMs { get; init; }
    public EnvelopeFlags Flags { get; init; }

    /// <summary>Not to be attempted before this time (Unix ms; 0: at once): the HTTP API's deliver_after, kept in the spool.</summary>
    public long NotBeforeUnixMs { get; init; }

    /// <summary>Where the lifetime and delay-warning clocks start: arrival, or the not-before time of a scheduled message.</summary>
    public long DueSinceUnixMs => Math.Max(ArrivalUnixMs, NotBeforeUnixMs);

    /// <summary>
    /// What the HTTP injection said about the message (UTF-8 JSON: tags, metadata, token name,
    /// pool; Api/InjectionMetadata), for the events written at delivery time; null for SMTP mail.
    /// </summary>
    public byte[]? Metadata { get; init; }

    /// <summary>
    /// The egress pool decided at reception (traffic.poolRules); null: the default pool. Stored in
    /// the head record's extension (bit 3 of its flag byte), so a spool written before pools
    /// existed recovers with none.
    /// </summary>
    public string? Pool { get; init; }

    public string SenderText => Sender.Length == 0 ? "<>" : System.Text.Encoding.UTF8.GetString(Sender);
    /// <summary>The sender as <see cref="SenderText"/> shows it, for a log line, without making a string.</summary>
    public Telemetry.Utf8Text SenderForLog => new(Sender.Length == 0 ? "<>"u8 : Sender);
    public string RecipientText(int i) => System.Text.Encoding.UTF8.GetString(Recipients[i]);
}
