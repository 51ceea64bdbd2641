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
        TlsaRecordData[]? dane = null, string? refusal = null)
    {
        Policy = dane is not null || refusal is not null ? TlsPolicy.Verify : policy;
        HostName = hostName;
        _verifier = verifier;
        Dane = dane;
        Refusal = refusal;
    }

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
    public string? VerifiedBy => !Verified ? null : Dane is not null ? "dane" : "ca";

    /// <summary>The policy's name for the log: the configured word, or "dane".</summary>
    public string PolicyName => Dane is not null || Refusal is not null ? "dane" : RoutingSettings.TlsName(Policy);

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
        ? (Dane is not null ? "DANE: " : "") + CertificateVerifier.Describe(Problem)
          + (HostName is null ? " (an address literal has no name to verify)" : $" {HostName}")
        : null;
}
