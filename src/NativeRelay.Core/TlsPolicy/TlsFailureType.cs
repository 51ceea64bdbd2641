namespace NativeRelay.TlsPolicies;

/// <summary>
/// Why a policy refused a next hop, in the words of the TLS-RPT result-type registry (RFC 8460
/// 4.3), so the delivery log, the metrics and the reports share one vocabulary.
/// </summary>
public static class TlsFailureType
{
    public const string StarttlsNotSupported = "starttls-not-supported";
    public const string CertificateHostMismatch = "certificate-host-mismatch";
    public const string CertificateExpired = "certificate-expired";
    public const string CertificateNotTrusted = "certificate-not-trusted";
    public const string ValidationFailure = "validation-failure";
    public const string TlsaInvalid = "tlsa-invalid";
    public const string DnssecInvalid = "dnssec-invalid";
    public const string DaneRequired = "dane-required";
    public const string StsPolicyFetchError = "sts-policy-fetch-error";
    public const string StsPolicyInvalid = "sts-policy-invalid";
    public const string StsWebpkiInvalid = "sts-webpki-invalid";

    public static string For(CertificateProblem problem) => problem switch
    {
        CertificateProblem.NameMismatch => CertificateHostMismatch,
        CertificateProblem.Expired => CertificateExpired,
        CertificateProblem.Untrusted or CertificateProblem.NoCertificate => CertificateNotTrusted,
        _ => ValidationFailure,
    };
}
