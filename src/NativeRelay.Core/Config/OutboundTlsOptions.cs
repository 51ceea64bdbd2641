namespace NativeRelay.Config;

/// <summary>
/// How the certificates of next hops are checked when a policy asks for it (delivery.tlsPolicy
/// "verify", a route's "tls": "verify"). See docs/CONFIG.md, "Outbound TLS".
/// </summary>
public sealed class OutboundTlsOptions
{
    /// <summary>
    /// PEM file of extra trust anchors (CA certificates) beside the system's trust store, for the
    /// verify policy. Default: the system store only.
    /// </summary>
    public string? CaFile { get; set; }

    /// <summary>
    /// DANE (RFC 7672) for MX hosts with DNSSEC-validated TLSA records: TLS then mandatory and
    /// the certificate matched against the records. Takes effect only with routing.dnssec; false turns it off.
    /// </summary>
    public bool Dane { get; set; } = true;

    /// <summary>
    /// MTA-STS (RFC 8461) for MX delivery: the recipient domain's "_mta-sts" TXT record and its
    /// policy from https://mta-sts.DOMAIN/.well-known/mta-sts.txt (certificate checked against the
    /// system store and caFile). On by default; false (serve --no-mta-sts) turns it off.
    /// </summary>
    public bool MtaSts { get; set; } = true;

    /// <summary>The port MTA-STS policies are fetched from. 443 (the RFC's); another value is for tests.</summary>
    public int MtaStsPort { get; set; } = 443;

    /// <summary>How long one policy fetch may take, connection included (1 to 300 seconds).</summary>
    public int MtaStsFetchTimeoutSeconds { get; set; } = 30;
}
