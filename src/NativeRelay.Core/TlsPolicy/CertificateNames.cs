using System.Formats.Asn1;
using System.Security.Cryptography.X509Certificates;

namespace NativeRelay.TlsPolicies;

/// <summary>
/// Whether a certificate names a host, by RFC 6125 section 6 as SMTP uses it (RFC 7672 3.2.3,
/// RFC 8461 4.2): the reference identifier is the MX host name (a DNS-ID); the certificate's
/// subjectAltName dNSName entries are compared with it label by label, ASCII case-insensitively
/// (internationalized names are compared in their A-label form, as certificates carry them); a
/// wildcard is honoured only as the whole left-most label ("*.example.com", never "f*.example.com"
/// or "www.*.com") and matches exactly one label, and not directly under a top-level domain. The
/// subject's CN is consulted only when the certificate has no dNSName at all (6.4.4). IP addresses
/// are never matched: an address literal has no name to verify.
/// </summary>
public static class CertificateNames
{
    /// <summary>True when <paramref name="certificate"/> is issued to <paramref name="hostName"/>.</summary>
    public static bool Matches(X509Certificate2 certificate, string hostName)
    {
        string host = Normalize(hostName);
        if (host.Length == 0 || System.Net.IPAddress.TryParse(host, out _))
            return false;
        bool anyDnsName = false;
        foreach (var name in DnsNames(certificate))
        {
            anyDnsName = true;
            if (PatternMatches(name, host))
                return true;
        }
        if (anyDnsName)
            return false;
        string? cn = certificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false);
        return cn is not null && PatternMatches(cn, host);
    }

    /// <summary>The subjectAltName dNSName entries (none when the extension is missing or malformed).</summary>
    public static IEnumerable<string> DnsNames(X509Certificate2 certificate)
    {
        foreach (var extension in certificate.Extensions)
        {
            if (extension.Oid?.Value != "2.5.29.17")
                continue;
            var san = extension as X509SubjectAlternativeNameExtension
                      ?? new X509SubjectAlternativeNameExtension(extension.RawData, extension.Critical);
            List<string> names = new();
            try
            {
                foreach (var name in san.EnumerateDnsNames())
                    names.Add(name);
            }
            catch (Exception e) when (e is AsnContentException or System.Security.Cryptography.CryptographicException)
            {
                return [];
            }
            return names;
        }
        return [];
    }

    /// <summary>
    /// One presented identifier against one (normalized) host name: exact, or a wildcard that
    /// is the whole left-most label and stands for exactly one label.
    /// </summary>
    public static bool PatternMatches(string presented, string host)
    {
        string pattern = Normalize(presented);
        if (pattern.Length == 0 || !IsAscii(pattern) || !IsAscii(host))
            return false;
        if (!pattern.StartsWith("*.", StringComparison.Ordinal))
            return pattern.Contains('*') ? false : string.Equals(pattern, host, StringComparison.OrdinalIgnoreCase);

        string suffix = pattern[1..]; // ".example.com"
        if (suffix.Contains('*'))
            return false;
        // At least two labels under the wildcard: "*.com" names no one host.
        if (suffix.AsSpan(1).IndexOf('.') < 0)
            return false;
        int dot = host.IndexOf('.');
        if (dot <= 0)
            return false;
        return string.Equals(host[dot..], suffix, StringComparison.OrdinalIgnoreCase);
    }

    private static string Normalize(string name)
    {
        name = name.Trim();
        return name.EndsWith('.') ? name[..^1] : name;
    }

    private static bool IsAscii(string s)
    {
        foreach (char c in s)
            if (c > 0x7e || c <= 0x20)
                return false;
        return true;
    }
}
