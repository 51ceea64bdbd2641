namespace NativeRelay.TlsPolicies;

/// <summary>
/// REQUIRETLS on delivery (RFC 8689 4.2): a message received with the REQUIRETLS MAIL parameter
/// goes only over a connection whose TLS was verified (DANE, MTA-STS or the CA check of
/// "verify") to a next hop that offers REQUIRETLS itself, and is relayed with the parameter;
/// otherwise it is not sent and comes back to its sender (RFC 8689 5: 5.7.10 when TLS could not
/// be verified, 5.7.30 when the next hop does not support REQUIRETLS). Decided per message
/// from what the connection already knows: no lookup, no allocation unless it refuses.
/// </summary>
public static class RequireTlsRule
{
    /// <param name="verifiedBy">How the connection's certificate was verified ("ca", "dane"), or null.</param>
    /// <param name="peerOffersRequireTls">The next hop's EHLO (after STARTTLS) lists REQUIRETLS.</param>
    /// <returns>Null when the message may go; otherwise the permanent reply for its recipients.</returns>
    /// <param name="nextHopTrusted">The host came from a DNSSEC-validated MX answer, an MTA-STS policy in enforce mode, or the configuration (RFC 8689 4.2.1).</param>
    public static string? Refusal(string? verifiedBy, bool encrypted, bool peerOffersRequireTls, string host, bool nextHopTrusted = true)
    {
        if (!nextHopTrusted)
            return $"5.7.10 REQUIRETLS: {host} was found through MX records that are not DNSSEC-validated, and no MTA-STS policy in enforce mode names it";
        if (!encrypted)
            return $"5.7.10 REQUIRETLS: the message must go over TLS, and {host} was reached without it";
        if (verifiedBy is null)
            return $"5.7.10 REQUIRETLS: the certificate of {host} could not be verified (no DANE, MTA-STS or trusted CA match)";
        if (!peerOffersRequireTls)
            return $"5.7.30 REQUIRETLS support required, but not offered by {host}";
        return null;
    }
}
