using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace NativeRelay.TlsPolicies;

/// <summary>What is wrong with a next hop's certificate, if anything.</summary>
public enum CertificateProblem : byte
{
    None,
    /// <summary>The peer sent no certificate.</summary>
    NoCertificate,
    /// <summary>The chain does not end at a trusted anchor (self-signed, unknown CA, broken chain).</summary>
    Untrusted,
    /// <summary>The chain is trusted but a certificate in it is expired or not yet valid.</summary>
    Expired,
    /// <summary>The certificate does not name the MX host (RFC 6125), or there is no name to check (an address literal).</summary>
    NameMismatch,
    /// <summary>DANE: no usable TLSA record matches the certificates presented.</summary>
    DaneMismatch,
}

/// <summary>
/// The PKIX check of the verify policy: the chain the handshake built against the system's trust
/// store, or, when that fails and a CA bundle is configured, a second chain with the bundle as
/// the only roots (the peer's intermediates kept); then the host name by
/// <see cref="CertificateNames"/> (our RFC 6125 rules, not the platform's: SslStream's own name
/// check is ignored). Revocation is not checked (as Postfix; OCSP from a relay is a privacy leak
/// and a hang). Immutable and shared; one call per TLS handshake.
/// </summary>
public sealed class CertificateVerifier
{
    // No static crypto objects here: an Oid (or anything else of System.Security.Cryptography)
    // made at start would load OpenSSL, whose shim aborts the process when it is missing, and a
    // relay without TLS must run without it. Everything below runs only inside a handshake.
    private const string ServerAuth = "1.3.6.1.5.5.7.3.1";

    public CertificateVerifier(TrustAnchors? anchors) => Anchors = anchors;

    public TrustAnchors? Anchors { get; }

    public static CertificateVerifier SystemOnly { get; } = new(null);

    /// <summary>Checks what a handshake presented; <paramref name="errors"/> are the platform's verdict on it.</summary>
    public CertificateProblem Check(X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors, string? hostName)
    {
        if (certificate is null || (errors & SslPolicyErrors.RemoteCertificateNotAvailable) != 0)
            return CertificateProblem.NoCertificate;
        var leaf = certificate as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        var problem = (errors & SslPolicyErrors.RemoteCertificateChainErrors) == 0
            ? CertificateProblem.None
            : CheckWithAnchors(leaf, chain);
        if (problem != CertificateProblem.None)
            return problem;
        return hostName is not null && CertificateNames.Matches(leaf, hostName) ? CertificateProblem.None : CertificateProblem.NameMismatch;
    }

    // The system store said no: the configured anchors may still say yes.
    private CertificateProblem CheckWithAnchors(X509Certificate2 leaf, X509Chain? presented)
    {
        if (Anchors is null)
            return Classify(presented);
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(Anchors.Certificates);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(new Oid(ServerAuth));
        if (presented is not null)
        {
            chain.ChainPolicy.ExtraStore.AddRange(presented.ChainPolicy.ExtraStore);
            foreach (var element in presented.ChainElements)
                if (!element.Certificate.RawDataMemory.Span.SequenceEqual(leaf.RawDataMemory.Span))
                    chain.ChainPolicy.ExtraStore.Add(element.Certificate);
        }
        return chain.Build(leaf) ? CertificateProblem.None : Classify(chain);
    }

    private static CertificateProblem Classify(X509Chain? chain)
    {
        if (chain is not null)
            foreach (var status in chain.ChainStatus)
                if ((status.Status & X509ChainStatusFlags.NotTimeValid) != 0)
                    return CertificateProblem.Expired;
        return CertificateProblem.Untrusted;
    }

    /// <summary>The words a log line or a reply uses for a problem.</summary>
    public static string Describe(CertificateProblem problem) => problem switch
    {
        CertificateProblem.None => "verified",
        CertificateProblem.NoCertificate => "no certificate",
        CertificateProblem.Untrusted => "untrusted certificate chain",
        CertificateProblem.Expired => "certificate expired or not yet valid",
        CertificateProblem.NameMismatch => "certificate does not name the host",
        CertificateProblem.DaneMismatch => "no TLSA record matches the certificate of",
        _ => problem.ToString(),
    };
}
