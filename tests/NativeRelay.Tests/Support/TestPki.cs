using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace NativeRelay.Tests.Support;

/// <summary>
/// A private certificate authority made at test time (nothing in the repository, nothing that
/// expires in CI): a root, optionally an intermediate, and server certificates issued by them for
/// the names, validity and key the test asks for, plus self-signed ones. Keys are ECDSA P-256.
/// </summary>
public sealed class TestPki : IDisposable
{
    public TestPki(string name = "NativeRelay Test Root CA")
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        using var created = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-30), DateTimeOffset.UtcNow.AddYears(5));
        Root = Reload(created);
    }

    public X509Certificate2 Root { get; }

    /// <summary>The root as PEM (what --ca-file reads).</summary>
    public string RootPem => Root.ExportCertificatePem() + "\n";

    public string WriteRoot(string directory, string name = "ca.pem")
    {
        string path = Path.Combine(directory, name);
        File.WriteAllText(path, RootPem);
        return path;
    }

    /// <summary>A server certificate (with its private key) for <paramref name="dnsNames"/> issued by the root.</summary>
    public X509Certificate2 Issue(string[] dnsNames, DateTimeOffset? notBefore = null, DateTimeOffset? notAfter = null,
        string? commonName = null, X509Certificate2? issuer = null) =>
        Create(dnsNames, notBefore ?? DateTimeOffset.UtcNow.AddDays(-1), notAfter ?? DateTimeOffset.UtcNow.AddDays(30),
            commonName ?? (dnsNames.Length > 0 ? dnsNames[0] : "no-san.test"), issuer ?? Root);

    /// <summary>An intermediate CA (with its private key) issued by the root, to issue server certificates with.</summary>
    public X509Certificate2 Intermediate(string name = "NativeRelay Test Issuing CA")
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var serial = new byte[12];
        RandomNumberGenerator.Fill(serial);
        serial[0] &= 0x7f;
        using var issued = request.Create(Root, DateTimeOffset.UtcNow.AddDays(-10), DateTimeOffset.UtcNow.AddYears(2), serial);
        using var withKey = issued.CopyWithPrivateKey(key);
        return Reload(withKey);
    }

    /// <summary>A self-signed server certificate for <paramref name="dnsNames"/> (valid dates, trusted by no one).</summary>
    public static X509Certificate2 SelfSigned(params string[] dnsNames) =>
        Create(dnsNames, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30), dnsNames[0], issuer: null);

    private static X509Certificate2 Create(string[] dnsNames, DateTimeOffset notBefore, DateTimeOffset notAfter, string commonName,
        X509Certificate2? issuer)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={commonName}", key, HashAlgorithmName.SHA256);
        if (dnsNames.Length > 0)
        {
            var san = new SubjectAlternativeNameBuilder();
            foreach (var name in dnsNames)
                san.AddDnsName(name);
            request.CertificateExtensions.Add(san.Build());
        }
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        if (issuer is null)
        {
            using var self = request.CreateSelfSigned(notBefore, notAfter);
            return Reload(self);
        }
        var serial = new byte[12];
        RandomNumberGenerator.Fill(serial);
        serial[0] &= 0x7f;
        // The issuer's validity bounds the child's: clamp so expired/not-yet-valid leaves can still be made.
        if (notAfter > issuer.NotAfter) notAfter = issuer.NotAfter;
        if (notBefore < issuer.NotBefore) notBefore = issuer.NotBefore;
        using var issued = request.Create(issuer, notBefore, notAfter, serial);
        using var withKey = issued.CopyWithPrivateKey(key);
        return Reload(withKey);
    }

    // Through PKCS#12 so the key is usable by SslStream on Linux.
    private static X509Certificate2 Reload(X509Certificate2 certificate) =>
        X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pfx), null);

    public void Dispose() => Root.Dispose();
}
