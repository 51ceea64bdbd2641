namespace NativeRelay.Config;

/// <summary>
/// SMTP TLS reporting (RFC 8460): the delivery side counts each day's TLS outcomes for every
/// recipient domain that publishes an "_smtp._tls" record, and sends them the day's aggregate
/// report (see docs/CONFIG.md, "TLS-RPT").
/// </summary>
public sealed class TlsRptOptions
{
    /// <summary>Record outcomes (on by default: the counts cost a dictionary update per connection).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Send the reports of finished days once a day from the relay itself; false: only by 'nativerelay tls-rpt send'.</summary>
    public bool SendDaily { get; set; }

    /// <summary>The reporting organization named in the reports (organization-name); default: the host name.</summary>
    public string? OrganizationName { get; set; }

    /// <summary>The contact in the reports (contact-info) and the From of mailed reports; default: postmaster@HOSTNAME.</summary>
    public string? ContactInfo { get; set; }
}
