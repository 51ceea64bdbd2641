using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using NativeRelay.Routing;

namespace NativeRelay.TlsPolicies;

/// <summary>
/// The TLS decision for one connection to one next hop, made by <see cref="ITlsPolicyResolver"/>
/// before it opens: the policy in force, the name to verify, and the certificate check the
/// handshake runs (<see cref="Validate"/> is the SslStream callback). After the handshake it
/// holds what was found. One per connection, never per message; used by one session at a time.
/// </summary>
public sealed class PeerCertificateCheck
{
    private readonly CertificateVerifier _verifier;

    public PeerCertificateCheck(TlsPolicy policy, string? hostName, CertificateVerifier verifier)
    {
        Policy = policy;
        HostName = hostName;
        _verifier = verifier;
    }

    public TlsPolicy Policy { get; }

    /// <summary>The reference identifier (the MX host name, or a route's host name); null for an address literal.</summary>
    public string? HostName { get; }

    /// <summary>True when an unverified certificate must fail the handshake (the verify policy).</summary>
    public bool MustVerify => Policy == TlsPolicy.Verify;

    /// <summary>True once a handshake ran the check.</summary>
    public bool Checked { get; private set; }

    /// <summary>The result of the last handshake's check.</summary>
    public CertificateProblem Problem { get; private set; } = CertificateProblem.NoCertificate;

    public bool Verified => Checked && Problem == CertificateProblem.None;

    /// <summary>The RemoteCertificateValidationCallback: records the verdict; refuses only when the policy requires verification.</summary>
    public bool Validate(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        Problem = _verifier.Check(certificate, chain, errors, HostName);
        Checked = true;
        return Problem == CertificateProblem.None || !MustVerify;
    }

    /// <summary>Why verification failed, for the reply and the log (null when verified or not checked).</summary>
    public string? Failure => Checked && Problem != CertificateProblem.None
        ? CertificateVerifier.Describe(Problem) + (HostName is null ? " (an address literal has no name to verify)" : $" {HostName}")
        : null;
}
