namespace NativeRelay.MailAuth;

/// <summary>How a listener treats mail authentication (the <c>inboundAuth.mode</c> option).</summary>
public enum InboundAuthMode : byte
{
    /// <summary>Nothing is checked and nothing is added.</summary>
    Off,
    /// <summary>SPF, DKIM and DMARC are checked and reported in an Authentication-Results header; nothing is refused.</summary>
    Annotate,
    /// <summary>As annotate, and the policies are applied (550 5.7.1 for a DMARC reject; SPF fail at MAIL when asked).</summary>
    Enforce,
}

/// <summary>What enforce does with a message DMARC says to reject (<c>inboundAuth.dmarcRejectAction</c>).</summary>
public enum DmarcRejectAction : byte
{
    /// <summary>550 5.7.1 at the end of data.</summary>
    Reject,
    /// <summary>Accepted, annotated and marked as quarantined (for routing).</summary>
    Quarantine,
    /// <summary>Accepted and annotated only.</summary>
    Annotate,
}
