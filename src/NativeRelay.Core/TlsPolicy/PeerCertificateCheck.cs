using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using NativeRelay.Routing;

namespace NativeRelay.TlsPolicies;

/// <summary>
/// The TLS decision for one connection to one next hop, made by <see cref="ITlsPolicyResolver"/>
/// before it opens: the policy in force, the name to verify, how to verify (the CA chain, or the
/// host's DANE TLSA records), and the certificate check the handshake runs (<see cref="Validate"/>
/// is the SslStream callback). After the handshake it holds what was found. One per connection,
/// never per message; used by one session at a time.
/// </summary>
public sealed class PeerCertificateCheck
{
    private readonly CertificateVerifier _verifier;

    public PeerCertificateCheck(TlsPolicy policy, string? hostName, CertificateVerifier verifier,
        TlsaRecordData[]? dane = null, string? refusal = null, string? refusalType = null,
        MtaSts.CachedMtaStsPolicy? sts = null, bool stsEnforced = false, bool stsMxMismatch = false, string? policyDomain = null)
    {
        Policy = dane is not null || refusal is not null || stsEnforced ? TlsPolicy.Verify : policy;
        HostName = hostName;
        _verifier = verifier;
        Dane = dane;
        Refusal = refusal;
        RefusalType = refusal is null ? null : refusalType ?? TlsFailureType.DnssecInvalid;
        Sts = sts;
        StsEnforced = stsEnforced;
        StsMxMismatch = stsMxMismatch;
        PolicyDomain = policyDomain;
    }

    /// <summary>The MTA-STS policy that applies to this host (enforce or testing), or null.</summary>
    public MtaSts.CachedMtaStsPolicy? Sts { get; }

    /// <summary>The MTA-STS policy is in enforce mode: TLS is mandatory and verified by the CA check.</summary>
    public bool StsEnforced { get; }

    /// <summary>Testing mode, and the host does not match the policy's mx patterns (reported, not refused).</summary>
    public bool StsMxMismatch { get; }

    /// <summary>The recipient domain whose policy this is (TLS-RPT counts under it), or null.</summary>
    public string? PolicyDomain { get; }

    /// <summary>The RFC 8460 result type of <see cref="Refusal"/>.</summary>
    public string? RefusalType { get; }

    /// <summary>An MTA-STS policy fetch that failed for this connection's domain (reported; the connection goes on without it).</summary>
    public string? StsFetchFailureType { get; init; }

    /// <summary>The policy the session applies (DANE makes TLS mandatory and verified, so it is <see cref="TlsPolicy.Verify"/>).</summary>
    public TlsPolicy Policy { get; }

    /// <summary>The reference identifier (the MX host name, or a route's host name); null for an address literal.</summary>
    public string? HostName { get; }

    /// <summary>The usable DNSSEC-validated TLSA records the certificate must match; null when DANE does not apply.</summary>
    public TlsaRecordData[]? Dane { get; }

    /// <summary>Set when the connection must not be made at all (a TLSA lookup that failed under DNSSEC): the reason.</summary>
    public string? Refusal { get; }

    /// <summary>True when an unverified certificate must fail the handshake (verify, DANE).</summary>
    public bool MustVerify => Policy == TlsPolicy.Verify;

    /// <summary>True once a handshake ran the check.</summary>
    public bool Checked { get; private set; }

    /// <summary>The result of the last handshake's check.</summary>
    public CertificateProblem Problem { get; private set; } = CertificateProblem.NoCertificate;

    public bool Verified => Checked && Problem == CertificateProblem.None;

    /// <summary>How the certificate was verified, for the delivery log and metrics: "dane", "ca", or null when it was not.</summary>
    public string? VerifiedBy => !Verified ? null : Dane is not null ? "dane" : Sts is not null && !StsMxMismatch ? "mta-sts" : "ca";

    /// <summary>The policy's name for the log: the configured word, "dane", "mta-sts" (enforce) or "mta-sts-testing".</summary>
    public string PolicyName => Dane is not null || RefusalType == TlsFailureType.DnssecInvalid ? "dane"
        : Sts is not null ? (StsEnforced ? "mta-sts" : "mta-sts-testing")
        : RoutingSettings.TlsName(Policy);

    /// <summary>For TLS-RPT: "tlsa", "sts" or "no-policy-found" (RFC 8460 4.4 policy-type).</summary>
    public string ReportPolicyType => Dane is not null || RefusalType == TlsFailureType.DnssecInvalid ? "tlsa"
        : Sts is not null ? "sts" : "no-policy-found";

    /// <summary>The RemoteCertificateValidationCallback: records the verdict; refuses only when the policy requires verification.</summary>
    public bool Validate(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        Problem = Dane is null ? _verifier.Check(certificate, chain, errors, HostName) : CheckDane(certificate, chain);
        Checked = true;
        return Problem == CertificateProblem.None || !MustVerify;
    }

    private CertificateProblem CheckDane(X509Certificate? certificate, X509Chain? chain)
    {
        if (certificate is null)
            return CertificateProblem.NoCertificate;
        var leaf = certificate as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        return DaneMatcher.Check(Dane!, leaf, Presented(chain, leaf), HostName);
    }

    // What the peer sent besides its leaf (SslStream puts it in the chain's extra store), and what
    // the platform chained it to.
    private static List<X509Certificate2> Presented(X509Chain? chain, X509Certificate2 leaf)
    {
        var all = new List<X509Certificate2>();
        if (chain is null)
            return all;
        foreach (var certificate in chain.ChainPolicy.ExtraStore)
            if (!certificate.RawDataMemory.Span.SequenceEqual(leaf.RawDataMemory.Span))
                all.Add(certificate);
        foreach (var element in chain.ChainElements)
            if (!element.Certificate.RawDataMemory.Span.SequenceEqual(leaf.RawDataMemory.Span))
                all.Add(element.Certificate);
        return all;
    }

    /// <summary>Why verification failed, for the reply and the log (null when verified or not checked).</summary>
    public string? Failure => Checked && Problem != CertificateProblem.None
        ? (Dane is not null ? "DANE: " : Sts is not null ? "MTA-STS: " : "") + CertificateVerifier.Describe(Problem)
          + (HostName is null ? " (an address literal has no name to verify)" : $" {HostName}")
        : null;
}
