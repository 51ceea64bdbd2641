namespace NativeRelay.Config;

/// <summary>
/// Mail authentication of inbound mail (SPF, DKIM, DMARC, Authentication-Results) on the edge
/// relay's port-25 listeners, for clients that are neither in <c>relayNetworks</c> nor
/// authenticated. See docs/CONFIG.md.
/// </summary>
public sealed class InboundAuthOptions
{
    /// <summary>
    /// "off" (default: nothing checked, nothing added), "annotate" (checked, one
    /// Authentication-Results header added, nothing refused), "enforce" (also refuse what the
    /// policy says: DMARC p=reject failures get 550 5.7.1 at the end of data). The default for
    /// every "smtp" listener; a listener's own <c>inboundAuth</c> overrides it.
    /// </summary>
    public string Mode { get; set; } = "off";

    /// <summary>The authserv-id that names our Authentication-Results headers (RFC 8601 2.5). Default: the hostname.</summary>
    public string? AuthservId { get; set; }

    /// <summary>Under "enforce", refuse MAIL FROM with 550 5.7.1 when SPF says fail (RFC 7208 8.4). Default: off (the result is only recorded).</summary>
    public bool SpfRejectFailAtMail { get; set; }

    /// <summary>What "enforce" does with a message DMARC says to reject: "reject" (550 5.7.1, default), "quarantine" (accept and mark), "annotate" (accept).</summary>
    public string DmarcRejectAction { get; set; } = "reject";

    /// <summary>
    /// What happens to a message that enforce quarantines (DMARC p=quarantine, or a reject turned
    /// into quarantine by dmarcRejectAction): "annotate" (default: delivered, its
    /// Authentication-Results says dmarc=fail) or "hold" (kept in the queue, held, until an
    /// operator releases or deletes it: Postfix's HOLD queue, where milters quarantine).
    /// </summary>
    public string Quarantine { get; set; } = "annotate";

    /// <summary>DKIM signatures looked at per message (the rest are not reported or used). 1 to 50, default 5.</summary>
    public int MaxDkimSignatures { get; set; } = 5;

    /// <summary>A Public Suffix List file (publicsuffix.org format) to use instead of the one built into the binary.</summary>
    public string? PublicSuffixListFile { get; set; }

    /// <summary>The time all the DNS work of one message may take; past it, what is missing is a temperror. 1 to 120, default 20 (RFC 7208 4.6.4).</summary>
    public int TimeoutSeconds { get; set; } = 20;

    /// <summary>DNS answers kept per record type (TXT, MX, addresses, PTR). Default 10000.</summary>
    public int DnsCacheSize { get; set; } = 10_000;
}
