using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using NativeRelay.Routing;

namespace NativeRelay.TlsPolicies;

/// <summary>
/// DANE for SMTP (RFC 7672, RFC 6698, RFC 7671): which TLSA records are usable and whether a
/// peer's certificates match one. Usable: DANE-TA(2) and DANE-EE(3), selectors Cert(0) and
/// SPKI(1), matching types Full(0), SHA2-256(1), SHA2-512(2) with a digest of the right length;
/// PKIX-TA(0), PKIX-EE(1) and anything unknown are ignored (RFC 7672 3.1.3). DANE-EE matches the
/// leaf and ignores names and validity (RFC 7672 3.1.1); DANE-TA matches a certificate of the
/// chain the peer presented, which then anchors the chain: the leaf must chain to it, be valid
/// now and name the MX host (RFC 7672 3.1.2, 3.2.3).
/// </summary>
public static class DaneMatcher
{
    public const byte DaneTa = 2, DaneEe = 3;

    public static bool IsUsable(TlsaRecordData record) =>
        record.Usage is DaneTa or DaneEe
        && record.Selector is 0 or 1
        && record.MatchingType switch
        {
            0 => record.Data.Length > 0,
            1 => record.Data.Length == 32,
            2 => record.Data.Length == 64,
            _ => false,
        };

    /// <summary>The usable records (an empty list when none is).</summary>
    public static TlsaRecordData[] Usable(IReadOnlyList<TlsaRecordData> records)
    {
        var usable = new List<TlsaRecordData>(records.Count);
        foreach (var record in records)
            if (IsUsable(record))
                usable.Add(record);
        return usable.ToArray();
    }

    /// <summary>
    /// Checks a handshake's certificates against usable records. <paramref name="presented"/> are
    /// the other certificates the peer sent (intermediates, perhaps its trust anchor).
    /// </summary>
    public static CertificateProblem Check(IReadOnlyList<TlsaRecordData> usable, X509Certificate2 leaf,
        IEnumerable<X509Certificate2> presented, string? hostName)
    {
        foreach (var record in usable)
            if (record.Usage == DaneEe && Matches(record, leaf))
                return CertificateProblem.None;

        var problem = CertificateProblem.DaneMismatch;
        foreach (var record in usable)
        {
            if (record.Usage != DaneTa)
                continue;
            foreach (var candidate in Candidates(record, presented))
            {
                if (!Matches(record, candidate))
                    continue;
                var anchored = ChainsTo(leaf, candidate, presented);
                if (anchored != CertificateProblem.None)
                {
                    problem = anchored;
                    continue;
                }
                if (hostName is not null && CertificateNames.Matches(leaf, hostName))
                    return CertificateProblem.None;
                problem = CertificateProblem.NameMismatch;
            }
        }
        return problem;
    }

    // The certificates a DANE-TA record may name: those presented, and, for "2 0 0", the
    // certificate in the record itself, which the server need not send (RFC 7671 5.2.2).
    private static IEnumerable<X509Certificate2> Candidates(TlsaRecordData record, IEnumerable<X509Certificate2> presented)
    {
        foreach (var certificate in presented)
            yield return certificate;
        if (record.Selector == 0 && record.MatchingType == 0)
        {
            X509Certificate2? published = null;
            try
            {
                published = X509CertificateLoader.LoadCertificate(record.Data);
            }
            catch (CryptographicException)
            {
            }
            if (published is not null)
                yield return published;
        }
    }

    /// <summary>Whether a record's association data matches a certificate (by its selector and matching type).</summary>
    public static bool Matches(TlsaRecordData record, X509Certificate2 certificate)
    {
        ReadOnlySpan<byte> selected = record.Selector == 0
            ? certificate.RawDataMemory.Span
            : certificate.PublicKey.ExportSubjectPublicKeyInfo();
        return record.MatchingType switch
        {
            0 => selected.SequenceEqual(record.Data),
            1 => SHA256.HashData(selected).AsSpan().SequenceEqual(record.Data),
            2 => SHA512.HashData(selected).AsSpan().SequenceEqual(record.Data),
            _ => false,
        };
    }

    // The trust anchor published in DNS need not be a self-signed root (an issuing CA is the
    // usual one), and platforms stop only at self-signed roots: so the chain is built with the
    // anchor as a custom root and unknown authorities allowed, and then must pass through the
    // anchor, with every certificate from the leaf up to it valid now and properly signed.
    // Whatever lies above the anchor does not matter. Revocation is not checked.
    private static CertificateProblem ChainsTo(X509Certificate2 leaf, X509Certificate2 anchor, IEnumerable<X509Certificate2> presented)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(anchor);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.AllowUnknownCertificateAuthority;
        foreach (var certificate in presented)
            chain.ChainPolicy.ExtraStore.Add(certificate);
        chain.ChainPolicy.ExtraStore.Add(anchor);
        chain.Build(leaf);
        const X509ChainStatusFlags AboveTheAnchor = X509ChainStatusFlags.UntrustedRoot | X509ChainStatusFlags.PartialChain;
        var expired = false;
        foreach (var element in chain.ChainElements)
        {
            foreach (var status in element.ChainElementStatus)
            {
                if ((status.Status & X509ChainStatusFlags.NotTimeValid) != 0)
                    expired = true;
                else if ((status.Status & ~AboveTheAnchor) != 0)
                    return CertificateProblem.DaneMismatch;
            }
            if (element.Certificate.RawDataMemory.Span.SequenceEqual(anchor.RawDataMemory.Span))
                return expired ? CertificateProblem.Expired : CertificateProblem.None;
        }
        return CertificateProblem.DaneMismatch; // the path does not pass through the anchor
    }
}
