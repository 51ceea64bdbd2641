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
}
