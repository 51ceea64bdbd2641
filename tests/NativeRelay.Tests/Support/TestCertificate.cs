using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace NativeRelay.Tests.Support;

/// <summary>
/// A self-signed server certificate made at test time (no files in the repository, nothing that
/// expires in CI): ECDSA P-256, valid for "relay.test", "localhost" and 127.0.0.1, written as PEM.
/// </summary>
public sealed class TestCertificate
{
    private TestCertificate(string certificatePath, string keyPath, string thumbprint, string subject)
    {
        CertificatePath = certificatePath;
        KeyPath = keyPath;
        Thumbprint = thumbprint;
        Subject = subject;
    }

    public string CertificatePath { get; }

    public string KeyPath { get; }

    /// <summary>SHA-1 thumbprint, as <see cref="X509Certificate2.Thumbprint"/> gives it.</summary>
    public string Thumbprint { get; }

    public string Subject { get; }

    /// <summary>Creates the certificate and writes NAME.crt and NAME.key into <paramref name="directory"/>.</summary>
    public static TestCertificate Create(string directory, string name = "server", string commonName = "relay.test")
    {
        var (certPem, keyPem, thumbprint, subject) = Generate(commonName);
        string certPath = Path.Combine(directory, name + ".crt");
        string keyPath = Path.Combine(directory, name + ".key");
        File.WriteAllText(certPath, certPem);
        File.WriteAllText(keyPath, keyPem);
        return new TestCertificate(certPath, keyPath, thumbprint, subject);
    }

    /// <summary>Writes a fresh certificate over the same two files (atomically, each by rename) and returns it.</summary>
    public TestCertificate Replace(string commonName)
    {
        var (certPem, keyPem, thumbprint, subject) = Generate(commonName);
        WriteAtomically(KeyPath, keyPem);
        WriteAtomically(CertificatePath, certPem);
        return new TestCertificate(CertificatePath, KeyPath, thumbprint, subject);
    }

    private static void WriteAtomically(string path, string content)
    {
        string temp = path + ".tmp";
        File.WriteAllText(temp, content);
        File.Move(temp, path, overwrite: true);
    }

    private static (string Cert, string Key, string Thumbprint, string Subject) Generate(string commonName)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={commonName}", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(commonName);
        san.AddDnsName("localhost");
        san.AddIpAddress(System.Net.IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        return (certificate.ExportCertificatePem() + "\n", key.ExportPkcs8PrivateKeyPem() + "\n", certificate.Thumbprint, certificate.Subject);
    }
}
